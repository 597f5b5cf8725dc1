//! Rollouts (root): a release that fails in any way (postdeploy, release phase, a web process
//! that never binds $PORT, a crash at boot) is refused with its error while the running release
//! answers every request made meanwhile; a good one takes over without a failed request.
mod supervisor_support;

use std::time::Duration;

use slipway::supervisor::{Formation, RolloutError};
use supervisor_support::*;

#[test]
fn failed_rollouts_leave_the_old_release_serving_and_a_good_one_takes_over() {
    let env = Env::new();
    let slug = env.build("supervisor", "web");
    let mut o = env.options();
    // A hang guard for the release that never binds: short, but far above a healthy boot.
    o.boot_timeout = Duration::from_secs(15);
    let sup = env.start_with(o);
    let mut log = Vec::new();
    let v1 = release("web", 1, &slug, &[("web", WEB)], &[]);
    sup.rollout(&v1, &Formation::web(2), &mut |l| log.push(l.to_string()))
        .unwrap_or_else(|e| panic!("{e}\n{}", log.join("\n")));
    let client = Client::start(env.events.clone(), "web");

    let attempt = |version: u32, types: &[(&str, &str)]| {
        let r = release("web", version, &slug, types, &[]);
        let mut log = Vec::new();
        let result = sup.rollout(&r, &Formation::web(2), &mut |l| log.push(l.to_string()));
        (result, log.join("\n"))
    };
    let (r, log) = attempt(2, &[("web", WEB), ("postdeploy", "echo migrating; exit 2")]);
    assert_eq!(r, Err(RolloutError::HookFailed { code: 2 }), "{log}");
    assert_eq!(r.unwrap_err().status(), "hook-error");
    assert!(log.contains("migrating"), "{log}");

    let (r, log) = attempt(3, &[("web", WEB), ("release", "echo preparing; exit 5")]);
    assert_eq!(r, Err(RolloutError::HookFailed { code: 5 }), "{log}");
    assert!(log.contains("preparing"), "{log}");

    let (r, log) = attempt(4, &[("web", "echo not listening; sleep 100000")]);
    match &r {
        Err(
            e @ RolloutError::BootTimeout {
                container,
                secs: 15,
            },
        ) => {
            assert!(container.starts_with("web-"), "{container}");
            assert_eq!(e.status(), "timeout-error");
        }
        other => panic!("{other:?}\n{log}"),
    }

    let (r, log) = attempt(5, &[("web", "echo boom; exit 4")]);
    match &r {
        Err(e @ RolloutError::Crashed { code: 4, .. }) => assert_eq!(e.status(), "crashed-error"),
        other => panic!("{other:?}\n{log}"),
    }

    // Meanwhile v1 answered every request, and it is all that runs.
    let results = client.stop();
    assert!(results.len() > 20, "{}", results.len());
    let bad: Vec<_> = results
        .iter()
        .filter(|r| r.as_deref() != Ok("v1"))
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    let ps = sup.ps("web");
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert!(
        ps.iter().all(|c| c.release == 1 && c.state == "up"),
        "{ps:?}"
    );
    assert_eq!(sup.current_release("web").unwrap().version, 1);

    // A good release: its hooks run, it takes over, no request fails.
    let client = Client::start(env.events.clone(), "web");
    let (r, log) = attempt(
        6,
        &[
            ("web", WEB),
            ("release", "echo release-phase-$CONTAINER_VERSION"),
            ("postdeploy", "echo postdeploy-ran"),
        ],
    );
    assert_eq!(r, Ok(()), "{log}");
    assert!(
        log.contains("release-phase-v6") && log.contains("postdeploy-ran"),
        "{log}"
    );
    let ps = wait_for("only v6 left", Duration::from_secs(60), || {
        let ps = sup.ps("web");
        (ps.len() == 2 && ps.iter().all(|c| c.release == 6)).then_some(ps)
    });
    assert!(ps.iter().all(|c| c.state == "up"), "{ps:?}");
    std::thread::sleep(Duration::from_millis(500));
    let results = client.stop();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(results.last().unwrap().as_deref(), Ok("v6"));
    assert_eq!(sup.current_release("web").unwrap().version, 6);
    let events = env.events.all("web");
    assert!(
        events.contains("postdeploy: Process exited with status 0"),
        "{events}"
    );

    sup.stop_app("web").unwrap();
    assert_eq!(env.settle(), Vec::<String>::new());
}
