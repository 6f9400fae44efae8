//! Which network addresses pullguard may contact. Image references and token realms are chosen
//! by whoever writes a manifest, so without a guard the webhook would fetch on their behalf what
//! they cannot reach themselves (SSRF). What a pod's author can reach is the measure:
//! - private ranges (RFC 1918, carrier-grade NAT, IPv6 ULA) are contacted by default. Private
//!   endpoints of cloud registries and in-cluster registries live there, the kubelet pulls from
//!   them, and anyone who can create a pod reaches them from the pod anyway. `allowPrivateNetworks:
//!   false` restricts them to the registries the config names;
//! - loopback is pullguard's own pod (its admin port, sidecars), which a pod's author cannot
//!   reach: only named registries;
//! - link-local and cloud metadata endpoints hold the node's or the webhook's credentials, often
//!   hidden from pods (IMDSv2 hop limits, metadata concealment) but not from pullguard's network
//!   namespace: never, unless the config names them.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use pullguard_core::{config::Config, glob};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    /// Link-local (169.254/16, fe80::/10) and the cloud metadata endpoints: never fetched.
    Metadata,
    Unspecified,
}

/// Metadata endpoints outside link-local ranges (Alibaba Cloud, AWS over IPv6).
const METADATA_V4: [Ipv4Addr; 1] = [Ipv4Addr::new(100, 100, 100, 200)];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return classify_v4(mapped);
            }
            let first = v6.segments()[0];
            if METADATA_V6.contains(&v6) || (first & 0xffc0) == 0xfe80 {
                AddressClass::Metadata
            } else if v6.is_loopback() {
                AddressClass::Loopback
            } else if v6.is_unspecified() {
                AddressClass::Unspecified
            } else if (first & 0xfe00) == 0xfc00 {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() || METADATA_V4.contains(&ip) {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() || ip.is_broadcast() {
        AddressClass::Unspecified
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918 and the shared carrier-grade NAT range, where cluster services often live.
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// The reason an address was not contacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {address} ({why}); pullguard does not contact it")]
pub struct AddressRefused {
    pub host: String,
    pub address: IpAddr,
    pub why: &'static str,
}

#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allow_private: bool,
    /// Host patterns of the configured registries and of the token services listed for them,
    /// without ports: what the operator named is contacted wherever it is.
    named: Vec<String>,
}

impl AddressPolicy {
    pub fn from_config(config: &Config) -> AddressPolicy {
        AddressPolicy {
            allow_private: config.allow_private_networks,
            named: config
                .registries
                .iter()
                .flat_map(|registry| std::iter::once(&registry.host).chain(&registry.token_realm_hosts))
                .map(|host| glob::split_port(host).0.to_string())
                .collect(),
        }
    }

    fn is_named(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.named
            .iter()
            .any(|pattern| glob::host_matches(pattern.trim_start_matches('[').trim_end_matches(']'), host))
    }

    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), AddressRefused> {
        if self.is_named(host) {
            return Ok(());
        }
        let refuse = |why| Err(AddressRefused { host: host.to_string(), address, why });
        match classify(address) {
            AddressClass::Public => Ok(()),
            AddressClass::Private if self.allow_private => Ok(()),
            AddressClass::Loopback => refuse("loopback; list the registry under `registries` in the config"),
            AddressClass::Private => refuse(
                "a private network, and allowPrivateNetworks is false; list the registry under `registries`",
            ),
            AddressClass::Metadata => refuse("link-local or a cloud metadata endpoint"),
            AddressClass::Unspecified => refuse("not a routable address"),
        }
    }

    /// For hosts written as IP literals, which never reach the resolver.
    pub fn check_literal(&self, host_and_port: &str) -> Result<(), AddressRefused> {
        let (host, _) = glob::split_port(host_and_port);
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(address) => self.check(host, address),
            Err(_) => Ok(()),
        }
    }
}

/// A resolver that drops refused addresses, so a name cannot be pointed at a metadata endpoint
/// (or rebound to one between a check and the connection).
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> GuardedResolver {
        GuardedResolver { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(&host, address.ip()) {
                    Ok(()) => true,
                    Err(error) => {
                        refused = Some(error);
                        false
                    }
                })
                .collect();
            if allowed.is_empty()
                && let Some(error) = refused
            {
                return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pullguard_core::config::RegistryConfig;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn classes() {
        let cases = [
            ("169.254.169.254", AddressClass::Metadata),
            ("169.254.0.1", AddressClass::Metadata),
            ("100.100.100.200", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("fe80::1", AddressClass::Metadata),
            ("::ffff:169.254.169.254", AddressClass::Metadata),
            ("127.0.0.1", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.0.0.5", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd12::1", AddressClass::Private),
            ("0.0.0.0", AddressClass::Unspecified),
            ("8.8.8.8", AddressClass::Public),
            ("2001:4860::8888", AddressClass::Public),
        ];
        for (address, class) in cases {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn named_registries_are_always_allowed_and_metadata_never_otherwise() {
        let config = Config {
            registries: vec![RegistryConfig { host: "registry.internal:5000".into(), ..Default::default() }],
            ..Config::default()
        };
        let policy = AddressPolicy::from_config(&config);
        assert!(policy.check("registry.internal", ip("10.1.2.3")).is_ok());
        assert!(policy.check("evil.example", ip("127.0.0.1")).is_err());
        assert!(policy.check("evil.example", ip("169.254.169.254")).is_err());
        assert!(policy.check("ghcr.io", ip("140.82.112.33")).is_ok());
        assert!(policy.check_literal("169.254.169.254").is_err());
        assert!(policy.check_literal("[fd00:ec2::254]:80").is_err());
        assert!(policy.check_literal("127.0.0.1:5000").is_err());
        assert!(policy.check_literal("docker.io").is_ok());
        assert!(policy.check("registry.internal", ip("127.0.0.1")).is_ok(), "named: always");
    }

    #[test]
    fn private_networks_by_default_loopback_and_metadata_only_when_named() {
        let default = AddressPolicy::from_config(&Config::default());
        for private in ["10.1.2.3", "172.20.0.9", "192.168.7.7", "100.64.3.2", "fd12::1"] {
            assert!(default.check("myregistry.azurecr.io", ip(private)).is_ok(), "{private}");
        }
        for refused in ["127.0.0.1", "::1", "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "0.0.0.0"]
        {
            assert!(default.check("r.example", ip(refused)).is_err(), "{refused}");
        }
        // A token service the operator lists for a registry is named too.
        let with_realm = AddressPolicy::from_config(&Config {
            registries: vec![RegistryConfig {
                host: "registry.internal".into(),
                token_realm_hosts: vec!["auth.internal".into()],
                ..Default::default()
            }],
            ..Config::default()
        });
        assert!(with_realm.check("auth.internal", ip("127.0.0.1")).is_ok());
        let restricted =
            AddressPolicy::from_config(&Config { allow_private_networks: false, ..Config::default() });
        assert!(restricted.check("r.example", ip("10.1.2.3")).is_err());
        assert!(restricted.check("ghcr.io", ip("140.82.112.33")).is_ok());
    }
}
