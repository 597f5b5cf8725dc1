//! Container sizes (Scalingo's names and memory), and the formation: how many containers of
//! each process type, of which size.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A container size: memory limit, pids limit and CPU weight grow together.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum Size {
    S,
    #[default]
    M,
    L,
    XL,
    #[serde(rename = "2XL")]
    XXL,
    #[serde(rename = "3XL")]
    XXXL,
}

/// What `Size::parse` accepts, for error messages.
pub const SIZE_NAMES: &str = "S, M, L, XL, 2XL, 3XL";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown container size {0:?}: use one of {SIZE_NAMES}")]
pub struct BadSize(pub String);

impl Size {
    pub const ALL: [Size; 6] = [Size::S, Size::M, Size::L, Size::XL, Size::XXL, Size::XXXL];

    /// The name users write: `S`, `M`, `L`, `XL`, `2XL`, `3XL`.
    pub fn name(&self) -> &'static str {
        match self {
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
            Size::XL => "XL",
            Size::XXL => "2XL",
            Size::XXXL => "3XL",
        }
    }

    fn rank(&self) -> u32 {
        match self {
            Size::S => 0,
            Size::M => 1,
            Size::L => 2,
            Size::XL => 3,
            Size::XXL => 4,
            Size::XXXL => 5,
        }
    }

    /// Memory limit (without swap): 256 MiB for S, doubling up to 8 GiB for 3XL.
    pub fn memory_bytes(&self) -> u64 {
        (256u64 << 20) << self.rank()
    }

    /// Most processes and threads at once: 128 for S, doubling up to 4096 for 3XL.
    pub fn pids_limit(&self) -> i64 {
        128 << self.rank()
    }

    /// CPU weight in cgroup v2 units (100 is the kernel's default share): 50 for S,
    /// doubling with each size. On cgroup v1 it becomes `cpu.shares` (x 10.24).
    pub fn cpu_weight(&self) -> u64 {
        50 << self.rank()
    }

    /// `cpu.shares` for the OCI spec (1024 is the v1 default; M gets it).
    pub fn cpu_shares(&self) -> u64 {
        self.cpu_weight() * 1024 / 100
    }

    /// Case-insensitive; `XXL` and `XXXL` are accepted for `2XL` and `3XL`.
    pub fn parse(s: &str) -> Result<Size, BadSize> {
        match s.trim().to_ascii_uppercase().as_str() {
            "S" => Ok(Size::S),
            "M" => Ok(Size::M),
            "L" => Ok(Size::L),
            "XL" => Ok(Size::XL),
            "2XL" | "XXL" => Ok(Size::XXL),
            "3XL" | "XXXL" => Ok(Size::XXXL),
            _ => Err(BadSize(s.to_string())),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Size {
    type Err = BadSize;
    fn from_str(s: &str) -> Result<Size, BadSize> {
        Size::parse(s)
    }
}

/// How many containers of one process type, and their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub count: u32,
    pub size: Size,
}

impl Scale {
    pub fn new(count: u32, size: Size) -> Scale {
        Scale { count, size }
    }
}

/// Process type -> scale. A type that is not listed has its default: one `web` container of
/// size M, no container of any other type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formation(pub BTreeMap<String, Scale>);

impl Formation {
    /// `web=N` (size M) and nothing else: for tests and first deployments.
    pub fn web(count: u32) -> Formation {
        let mut f = Formation::default();
        f.set("web", Scale::new(count, Size::M));
        f
    }

    pub fn set(&mut self, kind: &str, scale: Scale) -> &mut Formation {
        self.0.insert(kind.to_string(), scale);
        self
    }

    /// The scale of `kind`, defaults included.
    pub fn scale_of(&self, kind: &str) -> Scale {
        self.0.get(kind).copied().unwrap_or(Scale {
            count: u32::from(kind == "web"),
            size: Size::M,
        })
    }

    /// This formation with `other`'s entries on top (a scale names only what it changes).
    pub fn merged(&self, other: &Formation) -> Formation {
        let mut f = self.clone();
        for (k, v) in &other.0 {
            f.0.insert(k.clone(), *v);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_together_and_parse_back() {
        assert_eq!(Size::S.memory_bytes(), 256 << 20);
        assert_eq!(Size::M.memory_bytes(), 512 << 20);
        assert_eq!(Size::XXXL.memory_bytes(), 8 << 30);
        assert_eq!((Size::S.pids_limit(), Size::XXXL.pids_limit()), (128, 4096));
        assert_eq!(Size::M.cpu_shares(), 1024);
        for s in Size::ALL {
            assert_eq!(Size::parse(s.name()), Ok(s));
            assert_eq!(Size::parse(&s.name().to_lowercase()), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<Size>(&json).unwrap(), s);
        }
        let e = Size::parse("huge").unwrap_err().to_string();
        assert!(e.contains("2XL"), "{e}");
        assert_eq!(Size::default(), Size::M);
    }

    #[test]
    fn web_defaults_to_one_and_others_to_zero() {
        let f = Formation::default();
        assert_eq!(f.scale_of("web"), Scale::new(1, Size::M));
        assert_eq!(f.scale_of("worker").count, 0);
        let mut g = Formation::web(3);
        g.set("worker", Scale::new(2, Size::L));
        let h = g.merged(Formation::default().set("web", Scale::new(0, Size::S)));
        assert_eq!(h.scale_of("web"), Scale::new(0, Size::S));
        assert_eq!(h.scale_of("worker"), Scale::new(2, Size::L));
    }
}
