//! IPv4 subnets in CIDR notation (`10.213.7.0/24`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors from parsing CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {input:?}: {reason}; write it like 10.213.7.0/24")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

/// An IPv4 network: its first address and prefix length (host bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// The network containing `addr` with the given prefix length (host bits cleared).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError {
                input: format!("{addr}/{prefix_len}"),
                reason: "the prefix length is above 32",
            });
        }
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// The `n`th address of the network (0 is the network address), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix_len as u32);
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// The broadcast (last) address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: input.to_string(),
            reason,
        };
        let (addr, prefix) = input.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("bad address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        if prefix_len > 32 {
            return Err(err("the prefix length is above 32"));
        }
        let net = Self::new(addr, prefix_len)?;
        if net.network != addr {
            return Err(err("host bits are set; give the network address"));
        }
        Ok(net)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Splits an interface address like `10.213.7.2/24` into address and prefix length.
pub fn parse_interface_addr(input: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    let err = |reason| CidrError {
        input: input.to_string(),
        reason,
    };
    let (addr, prefix) = input.split_once('/').ok_or_else(|| err("no /prefix"))?;
    let addr = addr.parse().map_err(|_| err("bad address"))?;
    let prefix_len: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
    if prefix_len > 32 {
        return Err(err("the prefix length is above 32"));
    }
    Ok((addr, prefix_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let net: Ipv4Net = "10.213.7.0/24".parse().unwrap();
        assert_eq!(net.to_string(), "10.213.7.0/24");
        assert_eq!(net.nth(1), Some(Ipv4Addr::new(10, 213, 7, 1)));
        assert_eq!(net.nth(256), None);
        assert_eq!(net.broadcast(), Ipv4Addr::new(10, 213, 7, 255));
        assert!(net.contains(Ipv4Addr::new(10, 213, 7, 99)));
        assert!(!net.contains(Ipv4Addr::new(10, 213, 8, 1)));
        let all: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(all.broadcast(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.1/24",
            "10.0.0/24",
            "x/24",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_interface_addr("10.0.0.5/24").unwrap(),
            (Ipv4Addr::new(10, 0, 0, 5), 24)
        );
        assert!(parse_interface_addr("10.0.0.5").is_err());
    }
}
