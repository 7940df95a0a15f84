//! Loopback addresses of a test's own: each test takes a random
//! `127.A.B.0/24`, so its processes can use fixed ports without colliding
//! with another test running at the same time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A random u32 from the system generator.
pub fn random_u32() -> u32 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 4];
    SystemRandom::new().fill(&mut b).expect("random");
    u32::from_le_bytes(b)
}

/// A test's private slice of 127.0.0.0/8.
#[derive(Debug, Clone, Copy)]
pub struct TestNet {
    a: u8,
    b: u8,
}

impl TestNet {
    /// A fresh random /24 inside 127.0.0.0/8 (never 127.0.0.x).
    pub fn new() -> Self {
        let r = random_u32();
        Self {
            a: 10 + (r % 240) as u8,
            b: (r >> 8) as u8,
        }
    }

    /// Host `n` (1 to 254) of this net.
    pub fn ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, n))
    }

    /// `host n : port`.
    pub fn addr(&self, n: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(n), port)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}
