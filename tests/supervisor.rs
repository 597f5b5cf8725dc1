//! The supervisor end to end (root): a fixture app built with `slipway build`, its containers
//! run by monitors, driven through `Supervisor` as the daemon drives it. Each test has its own
//! data dir, run dir, bridge and subnet; waits are hang guards, not timing assertions.
mod supervisor_support;

use std::collections::BTreeSet;
use std::time::Duration;

use slipway::supervisor::{Formation, Scale, Size};
use supervisor_support::*;

const LONG: Duration = Duration::from_secs(90);

#[test]
fn three_web_containers_answer_each_with_its_own_name_and_address_and_nothing_is_left() {
    let env = Env::new();
    let slug = env.build("supervisor", "shop");
    let sup = env.start();
    let r = release("shop", 1, &slug, &[("web", WEB)], &[("GREETING", "hello")]);
    let mut log = Vec::new();
    sup.rollout(&r, &Formation::web(3), &mut |l| log.push(l.to_string()))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", log.join("\n"), env.events.all("shop")));

    let backends = env.events.backends("shop");
    assert_eq!(backends.len(), 3, "{backends:?}");
    let mut names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for b in &backends {
        let info = get_json(b.address).unwrap();
        assert_eq!(info["CONTAINER"], b.container.as_str());
        assert_eq!(info["APP"], "shop");
        assert_eq!(info["PORT"], "5000");
        assert_eq!(info["GREETING"], "hello");
        assert_eq!(info["CONTAINER_SIZE"], "M");
        assert_eq!(info["CONTAINER_MEMORY"], (512u64 << 20).to_string());
        assert_eq!(info["HOSTNAME"], format!("shop-{}", b.container));
        assert_eq!(info["ip"], b.address.ip().to_string());
        names.insert(info["CONTAINER"].as_str().unwrap().to_string());
        ips.insert(b.address.ip());
    }
    assert_eq!(
        names,
        BTreeSet::from(["web-1".into(), "web-2".into(), "web-3".into()])
    );
    assert_eq!(ips.len(), 3);

    let ps = sup.ps("shop");
    assert_eq!(ps.len(), 3, "{ps:?}");
    assert!(
        ps.iter()
            .all(|c| c.state == "up" && c.pid.is_some() && c.release == 1),
        "{ps:?}"
    );

    // Scale down to one, then destroy: nothing of the app is left on the host.
    sup.scale(
        "shop",
        Formation::default().set("web", Scale::new(1, Size::M)),
    )
    .unwrap();
    wait_for("two containers stopped", LONG, || {
        (sup.ps("shop").len() == 1 && env.events.backends("shop").len() == 1).then_some(())
    });
    sup.stop_app("shop").unwrap();
    assert!(sup.ps("shop").is_empty());
    assert!(env.events.backends("shop").is_empty());
    assert_eq!(env.settle(), Vec::<String>::new());
}
