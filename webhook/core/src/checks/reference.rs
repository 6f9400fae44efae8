//! PG100 (invalid reference) and PG601 (mutable tag): decided from the reference alone.

use super::Subject;
use crate::{
    finding::{Code, Finding},
    reference::{ImageRef, ReferenceError},
};

pub fn reference_findings(subject: Subject<'_>, parsed: &Result<ImageRef, ReferenceError>) -> Vec<Finding> {
    match parsed {
        Err(error) => vec![subject.finding(
            Code::InvalidReference,
            format!("invalid image reference: {error}"),
            format!(
                "image reference {:?} is not valid: {error}. The kubelet refuses it with InvalidImageName \
                 and the pod never starts. Fix the reference: [registry[:port]/]repository[:tag][@digest], \
                 repository in lowercase.",
                subject.image
            ),
        )],
        Ok(image) => mutable_tag(subject, image).into_iter().collect(),
    }
}

fn mutable_tag(subject: Subject<'_>, image: &ImageRef) -> Option<Finding> {
    if image.digest().is_some() {
        return None;
    }
    let why = match image.tag() {
        None => "has no tag, so it means :latest",
        Some("latest") => "uses the tag latest",
        Some(_) => return None,
    };
    Some(subject.finding(
        Code::MutableTag,
        format!("mutable tag: {} {why}", image.normalized()),
        format!(
            "image {} {why}, which moves with every push: nodes cache whatever they pulled first, so \
             replicas can run different code and a rollback cannot bring the old image back. Pin a \
             version tag or a digest (for example {}@sha256:...).",
            subject.image,
            image.name()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(image: &str) -> Vec<Code> {
        let subject = Subject { container: "app", image, volume: false };
        reference_findings(subject, &ImageRef::parse(image)).iter().map(|finding| finding.code).collect()
    }

    #[test]
    fn table() {
        let cases: &[(&str, &[Code])] = &[
            ("Docker.io/Library/Nginx", &[Code::InvalidReference]),
            ("nginx:", &[Code::InvalidReference]),
            ("", &[Code::InvalidReference]),
            ("nginx", &[Code::MutableTag]),
            ("nginx:latest", &[Code::MutableTag]),
            ("nginx:1.25", &[]),
            ("nginx:latest@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945", &[]),
            (
                "ghcr.io/example/sidecar@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                &[],
            ),
        ];
        for (image, expected) in cases {
            assert_eq!(codes(image), *expected, "{image}");
        }
    }

    #[test]
    fn messages_say_what_why_and_fix() {
        let subject = Subject { container: "web", image: "Nginx", volume: false };
        let findings = reference_findings(subject, &ImageRef::parse("Nginx"));
        assert!(findings[0].message.contains("InvalidImageName"));
        assert!(findings[0].message.contains("lowercase"));
        assert_eq!(findings[0].container, "web");
    }
}
