//! Which IP addresses a webhook may be sent to: the SSRF guard's rule, as data.
//!
//! A job chooses its callback URL, so without a rule a job could make every worker POST
//! to `http://127.0.0.1:6379/` (Redis itself), to a cloud metadata service
//! (`169.254.169.254`) or to anything on the workers' private network. [`is_public`]
//! says whether an address is one the open Internet routes; everything else is refused
//! unless `webhooks.allow_private` is set. The dispatcher (`mcpq_shared::webhook`)
//! applies it to every address a host name resolves to, and connects only to the
//! addresses it checked; the producer applies it at submit to a URL whose host is an
//! address literal.
//!
//! # Guarantees
//! Refused (not public): unspecified (`0.0.0.0/8`, `::`), loopback (`127.0.0.0/8`,
//! `::1`), private (`10/8`, `172.16/12`, `192.168/16`), carrier-grade NAT
//! (`100.64/10`), link-local (`169.254/16`, `fe80::/10`), unique-local (`fc00::/7`),
//! site-local (`fec0::/10`), multicast (`224/4`, `ff00::/8`), reserved and broadcast
//! (`240/4`), documentation and benchmarking ranges, IETF protocol assignments
//! (`192.0.0/24`), the discard prefix `100::/64`; an IPv6 address that embeds an IPv4
//! one (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) is judged by the IPv4 address it carries.
//!
//! # Caveats
//! A public address may still be yours (a load balancer of your own network reached
//! from outside): the guard keeps jobs off addresses the Internet cannot reach, it is
//! not a firewall.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when `ip` is an address the open Internet routes (see the module doc).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..=127).contains(&b)) // carrier-grade NAT
        || (a == 169 && b == 254)
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224; // multicast, reserved, broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4 carried inside IPv6: judged as that IPv4 address.
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        if s[5] == 0 && s[6] == 0 {
            // `::` and `::1` (and the rest of ::/112): never public.
            return false;
        }
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765): judged as that IPv4 address.
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // Local-use NAT64 (64:ff9b:1::/48, RFC 8215): translates to whatever the site
    // chose, its private networks included.
    if s[..3] == [0x64, 0xff9b, 1] {
        return false;
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    let refused = (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] & 0xfe00) == 0xfc00 // unique-local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..4] == [0x100, 0, 0, 0]; // discard-only
    !refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().expect("an address"))
    }

    #[test]
    fn private_loopback_link_local_and_the_like_are_refused() {
        for ip in [
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.0.0.1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:2::808:808",
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "100::1",
        ] {
            assert!(!public(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn internet_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(ip), "{ip} must be allowed");
        }
    }
}
