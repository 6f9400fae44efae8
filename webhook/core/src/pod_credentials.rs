//! The pull credentials of one pod, assembled the way the kubelet will use them: the pod's
//! `imagePullSecrets`, or, for a workload template, its service account's (the ServiceAccount
//! admission plugin merges those into the Pod only when the Pod names none).

use k8s_openapi::api::core::v1::PodSpec;

use std::future::Future;

use crate::{
    credentials::{Keyring, SecretProblem},
    finding::{Finding, Severity},
    reference::ImageRef,
};

/// One named secret, as far as pulling goes.
#[derive(Clone, Debug)]
pub enum SecretRead {
    Usable(Keyring),
    Malformed(SecretProblem),
    Missing,
    /// The API could not be asked (down, or forbidden): nothing can be said about this secret.
    Unreadable(String),
}

/// One named service account, as far as pulling goes: the pull secrets it lends its pods.
#[derive(Clone, Debug)]
pub enum AccountRead {
    Found(Vec<String>),
    Missing,
    Unreadable(String),
}

/// Where pull secrets and service accounts are read: the API server, through a cache, in the
/// webhook (`cluster::PullSecretReader`); a table in tests.
pub trait PullSecretSource: Sync {
    fn secret(&self, namespace: &str, name: &str) -> impl Future<Output = SecretRead> + Send;

    fn service_account(&self, namespace: &str, name: &str) -> impl Future<Output = AccountRead> + Send;

    /// Drops what is remembered about `secrets` and `account`, so that the next reads ask again.
    fn forget(
        &self,
        namespace: &str,
        secrets: &[String],
        account: Option<&str>,
    ) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, Clone, Default)]
pub struct PodCredentials {
    /// Secret names the pulls will use, in order.
    pub referenced: Vec<String>,
    /// Where the names came from, for messages ("the pod", "service account default").
    pub origin: String,
    /// Usable credentials of the referenced secrets, in the kubelet's order.
    pub keyring: Keyring,
    pub missing: Vec<String>,
    pub malformed: Vec<(String, SecretProblem)>,
    /// Set when the API could not be asked: credentials are then unknown, never "missing".
    pub unreadable: Option<String>,
    /// Read for a workload template, whose controller waits for a missing service account and
    /// whose pods retry a missing secret: what does not exist yet is a warning there, not an error.
    pub template: bool,
    /// The service account the template's pulls use does not exist (yet).
    pub account_missing: bool,
}

impl PodCredentials {
    /// No secrets at all (what `check --image` without `--pull-secret` means).
    pub fn none() -> PodCredentials {
        PodCredentials { origin: "the pod".into(), ..PodCredentials::default() }
    }

    /// The secrets cannot be read (no cluster): never claim they are missing or wrong.
    pub fn unknown(spec: &PodSpec, is_pod: bool, reason: &str) -> PodCredentials {
        let referenced = named_secrets(spec);
        let unreadable = (!referenced.is_empty() || !is_pod).then(|| reason.to_string());
        PodCredentials { referenced, unreadable, ..PodCredentials::none() }
    }

    /// Reads the secrets named by the pod (or its service account, for a template), from the
    /// reader's cache where it has them.
    pub async fn read(
        reader: &impl PullSecretSource,
        namespace: &str,
        spec: &PodSpec,
        is_pod: bool,
    ) -> PodCredentials {
        let credentials = Self::references(reader, namespace, spec, is_pod).await;
        credentials.read_secrets(reader, namespace).await
    }

    /// [`PodCredentials::read`] with every object asked of the API again: the service account,
    /// then the secrets it (or the pod) names now. What a denial rests on.
    pub async fn read_fresh(
        reader: &impl PullSecretSource,
        namespace: &str,
        spec: &PodSpec,
        is_pod: bool,
    ) -> PodCredentials {
        reader.forget(namespace, &[], Self::account_of(spec, is_pod)).await;
        let credentials = Self::references(reader, namespace, spec, is_pod).await;
        reader.forget(namespace, &credentials.referenced, None).await;
        credentials.read_secrets(reader, namespace).await
    }

    /// The secret names the pulls will use, and where they come from.
    async fn references(
        reader: &impl PullSecretSource,
        namespace: &str,
        spec: &PodSpec,
        is_pod: bool,
    ) -> PodCredentials {
        let mut credentials = PodCredentials { template: !is_pod, ..PodCredentials::none() };
        match Self::account_of(spec, is_pod) {
            None => credentials.referenced = named_secrets(spec),
            Some(account) => {
                credentials.origin = format!("service account {account}");
                match reader.service_account(namespace, account).await {
                    AccountRead::Found(names) => credentials.referenced = names,
                    // Not yet, perhaps: a bundle applied in one go creates it a moment later.
                    AccountRead::Missing => credentials.account_missing = true,
                    AccountRead::Unreadable(reason) => credentials.unreadable = Some(reason),
                }
            }
        }
        credentials
    }

    async fn read_secrets(self, reader: &impl PullSecretSource, namespace: &str) -> PodCredentials {
        let mut credentials = self;
        let reads = futures::future::join_all(
            credentials.referenced.iter().map(|name| reader.secret(namespace, name)),
        )
        .await;
        for (name, read) in credentials.referenced.iter().zip(reads) {
            match read {
                SecretRead::Usable(keyring) => credentials.keyring.extend(keyring),
                SecretRead::Malformed(problem) => credentials.malformed.push((name.clone(), problem)),
                SecretRead::Missing => credentials.missing.push(name.clone()),
                SecretRead::Unreadable(reason) => credentials.unreadable = Some(reason),
            }
        }
        credentials
    }

    /// The service account a template's pulls use, when its secrets come from one.
    pub fn account_of(spec: &PodSpec, is_pod: bool) -> Option<&str> {
        let names_secrets =
            spec.image_pull_secrets.iter().flatten().any(|reference| !reference.name.is_empty());
        if is_pod || names_secrets {
            return None;
        }
        Some(spec.service_account_name.as_deref().filter(|name| !name.is_empty()).unwrap_or("default"))
    }

    /// Only `keyring`, as if a pod named just the secret `name` (to try a secret the pod could use).
    pub fn only(name: &str, keyring: Keyring) -> PodCredentials {
        PodCredentials { referenced: vec![name.to_string()], keyring, ..PodCredentials::none() }
    }

    /// From Secret manifests given to `check --pull-secret`.
    pub fn from_secrets(secrets: Vec<(String, Result<Keyring, SecretProblem>)>) -> PodCredentials {
        let mut credentials = PodCredentials { origin: "--pull-secret".into(), ..PodCredentials::none() };
        for (name, read) in secrets {
            credentials.referenced.push(name.clone());
            match read {
                Ok(keyring) => credentials.keyring.extend(keyring),
                Err(problem) => credentials.malformed.push((name, problem)),
            }
        }
        credentials
    }
}

fn named_secrets(spec: &PodSpec) -> Vec<String> {
    spec.image_pull_secrets
        .iter()
        .flatten()
        .filter(|reference| !reference.name.is_empty())
        .map(|reference| reference.name.clone())
        .collect()
}

/// Where credentials were missing, point at a pull secret of the namespace that would have
/// matched but is not referenced: the most common fix is one line of YAML.
pub fn add_secret_hints(
    findings: &mut [Finding],
    namespace_secrets: &[(String, Keyring)],
    referenced: &[String],
) {
    for finding in findings
        .iter_mut()
        .filter(|finding| finding.code.wants_a_secret() && finding.severity == Severity::Error)
    {
        let Ok(image) = ImageRef::parse(&finding.image) else { continue };
        let candidates: Vec<&str> = namespace_secrets
            .iter()
            .filter(|(name, keyring)| !referenced.contains(name) && !keyring.lookup(&image).is_empty())
            .map(|(name, _)| name.as_str())
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let names = candidates.join(", ");
        finding.message.push_str(&format!(
            " The namespace has a pull secret for {} that the pod does not reference: add imagePullSecrets: [{names}].",
            image.registry()
        ));
        finding.summary.push_str(&format!(" (add imagePullSecrets: [{names}])"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credential;
    use crate::finding::Code;

    #[test]
    fn hints_name_unreferenced_matching_secrets() {
        let mut ring = Keyring::default();
        ring.add("r.example", Credential::new("u", "p"));
        let secrets = vec![("regcred".to_string(), ring.clone()), ("other".to_string(), Keyring::default())];
        let finding = |code| Finding {
            code,
            severity: Severity::Error,
            container: "c".into(),
            volume: false,
            image: "r.example/app:v1".into(),
            summary: "s".into(),
            message: "m.".into(),
        };
        let mut findings = vec![finding(Code::CredentialsRequired), finding(Code::TagNotFound)];
        add_secret_hints(&mut findings, &secrets, &[]);
        assert!(findings[0].message.contains("add imagePullSecrets: [regcred]"), "{}", findings[0].message);
        assert_eq!(findings[1].message, "m.");
        let mut referenced = vec![finding(Code::NoSecretForRegistry)];
        add_secret_hints(&mut referenced, &secrets, &["regcred".to_string()]);
        assert_eq!(referenced[0].message, "m.");
    }

    #[test]
    fn without_a_cluster_credentials_are_unknown_not_missing() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [], "imagePullSecrets": [{"name": "regcred"}]
        }))
        .unwrap();
        assert!(PodCredentials::unknown(&spec, true, "no API").unreadable.is_some());
        let bare = PodSpec::default();
        assert!(
            PodCredentials::unknown(&bare, true, "no API").unreadable.is_none(),
            "a pod naming no secret has none"
        );
        assert!(
            PodCredentials::unknown(&bare, false, "no API").unreadable.is_some(),
            "a template's SA is unknown"
        );
    }

    /// Secrets and service accounts as a table, and which reads the code asked to forget.
    #[derive(Default)]
    struct Table {
        secrets: std::collections::BTreeMap<&'static str, SecretRead>,
        accounts: std::collections::BTreeMap<&'static str, AccountRead>,
        /// Reads and forgets, in the order they were asked.
        log: std::sync::Mutex<Vec<String>>,
    }

    impl PullSecretSource for Table {
        async fn secret(&self, _namespace: &str, name: &str) -> SecretRead {
            self.log.lock().unwrap().push(format!("read secret {name}"));
            self.secrets.get(name).cloned().unwrap_or(SecretRead::Missing)
        }
        async fn service_account(&self, _namespace: &str, name: &str) -> AccountRead {
            self.log.lock().unwrap().push(format!("read account {name}"));
            self.accounts.get(name).cloned().unwrap_or(AccountRead::Missing)
        }
        async fn forget(&self, _namespace: &str, secrets: &[String], account: Option<&str>) {
            let mut log = self.log.lock().unwrap();
            log.extend(secrets.iter().map(|name| format!("forget secret {name}")));
            log.extend(account.map(|name| format!("forget account {name}")));
        }
    }

    fn table() -> Table {
        let mut ring = Keyring::default();
        ring.add("r.example", Credential::new("u", "p"));
        let mut table = Table::default();
        table.secrets.insert("good", SecretRead::Usable(ring));
        table
            .secrets
            .insert("opaque", SecretRead::Malformed(SecretProblem::WrongType { found: "Opaque".into() }));
        table.secrets.insert("forbidden", SecretRead::Unreadable("Forbidden (403)".into()));
        table.accounts.insert("default", AccountRead::Found(vec!["good".into()]));
        table.accounts.insert("builder", AccountRead::Found(vec!["gone".into(), "opaque".into()]));
        table.accounts.insert("locked", AccountRead::Unreadable("Forbidden (403)".into()));
        table
    }

    fn spec(secrets: &[&str], account: Option<&str>) -> PodSpec {
        PodSpec {
            image_pull_secrets: Some(
                secrets
                    .iter()
                    .map(|name| k8s_openapi::api::core::v1::LocalObjectReference { name: name.to_string() })
                    .collect(),
            ),
            service_account_name: account.map(String::from),
            ..PodSpec::default()
        }
    }

    /// What the kubelet will have to pull with, in a line.
    fn summary(read: &PodCredentials) -> String {
        let usable = read.keyring.lookup(&ImageRef::parse("r.example/app:v1").unwrap()).len();
        let mut line = format!("{}: usable {usable}", read.origin);
        if !read.missing.is_empty() {
            line.push_str(&format!(", missing {:?}", read.missing));
        }
        if !read.malformed.is_empty() {
            let names: Vec<&str> = read.malformed.iter().map(|(name, _)| name.as_str()).collect();
            line.push_str(&format!(", malformed {names:?}"));
        }
        if read.unreadable.is_some() {
            line.push_str(", unreadable");
        }
        if read.account_missing {
            line.push_str(", account missing");
        }
        line
    }

    /// Each row: what the pod names (secrets, service account), Pod or template, and what the
    /// kubelet will have to pull with.
    #[test]
    fn credentials_as_the_kubelet_assembles_them() {
        type Row = (&'static [&'static str], Option<&'static str>, bool, &'static str);
        let rows: [Row; 9] = [
            (&["good"], None, true, "the pod: usable 1"),
            (&["gone", "opaque"], None, true, r#"the pod: usable 0, missing ["gone"], malformed ["opaque"]"#),
            // A secret that cannot be read is unknown, never missing.
            (&["forbidden"], None, true, "the pod: usable 0, unreadable"),
            // A Pod naming none: the API server merged its account's already.
            (&[], Some("builder"), true, "the pod: usable 0"),
            (&[], None, false, "service account default: usable 1"),
            (
                &[],
                Some("builder"),
                false,
                r#"service account builder: usable 0, missing ["gone"], malformed ["opaque"]"#,
            ),
            // Not yet, perhaps: a bundle applied in one go creates it a moment later.
            (&[], Some("later"), false, "service account later: usable 0, account missing"),
            (&[], Some("locked"), false, "service account locked: usable 0, unreadable"),
            // A template naming secrets does not use its account's.
            (&["good"], Some("builder"), false, "the pod: usable 1"),
        ];
        let table = table();
        for (secrets, account, is_pod, expected) in rows {
            let read = futures::executor::block_on(PodCredentials::read(
                &table,
                "shop",
                &spec(secrets, account),
                is_pod,
            ));
            assert_eq!(summary(&read), expected, "{secrets:?} {account:?} pod: {is_pod}");
            assert_eq!(read.template, !is_pod);
        }
    }

    /// What a denial rests on is read again: the account first, then the secrets it names now.
    #[test]
    fn fresh_reads_forget_the_account_then_its_secrets() {
        let table = table();
        let read = futures::executor::block_on(PodCredentials::read_fresh(
            &table,
            "shop",
            &spec(&[], Some("builder")),
            false,
        ));
        assert_eq!(read.missing, ["gone"]);
        assert_eq!(
            *table.log.lock().unwrap(),
            [
                "forget account builder",
                "read account builder",
                "forget secret gone",
                "forget secret opaque",
                "read secret gone",
                "read secret opaque",
            ]
        );
        // A cached read asks nothing to be forgotten.
        table.log.lock().unwrap().clear();
        futures::executor::block_on(PodCredentials::read(&table, "shop", &spec(&[], Some("builder")), false));
        assert!(table.log.lock().unwrap().iter().all(|entry| entry.starts_with("read")));
    }
}
