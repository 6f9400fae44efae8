//! AdmissionReview bodies as the API server would POST them: decode, find the pod spec of the
//! kind in `object` and `oldObject`, list the containers. Nothing here may panic: a malformed
//! review must become an error (HTTP 400) or an "unreadable" allow, never a crashed handler.
//! The objects read in the one pass over the body must equal what reading their text part by
//! part gives (`decode_raw`), and both decodings must accept and refuse the same bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullguard::admission::{ObjectJson, ReviewRequest};
use pullguard_core::{
    reference::ImageRef,
    workload::{WorkloadKind, changed_containers, containers},
};

fuzz_target!(|data: &[u8]| {
    let decoded = ReviewRequest::decode(data);
    let raw = ReviewRequest::decode_raw(data);
    assert_eq!(
        decoded.is_ok(),
        raw.is_ok(),
        "the two decodings disagree on {:?}",
        String::from_utf8_lossy(data)
    );
    let (Ok(request), Ok(raw)) = (decoded, raw) else { return };
    assert_eq!((&request.uid, &request.operation, &request.name), (&raw.uid, &raw.operation, &raw.name));
    let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) else { return };
    let read = |object: Option<&ObjectJson<'_>>| {
        object.map(|object| {
            let metadata = object.metadata().ok().map(|metadata| metadata.into_owned());
            (metadata, object.pod_spec(kind).ok().map(|spec| spec.into_owned()))
        })
    };
    for (fast, parts) in [(&request.object, &raw.object), (&request.old_object, &raw.old_object)] {
        let (fast, parts) = (read(fast.as_ref()), read(parts.as_ref()));
        // A read object has no faults; text read in parts may (and then `decode` kept it as text).
        if let (Some((Some(_), Some(_))), Some((Some(_), Some(_)))) = (&fast, &parts) {
            assert_eq!(fast, parts, "one pass and parts differ on {:?}", String::from_utf8_lossy(data));
        }
    }
    let images = |object: Option<&ObjectJson<'_>>| {
        let spec = object?.pod_spec(kind).ok()?;
        Some(containers(&spec))
    };
    let new = images(request.object.as_ref()).unwrap_or_default();
    let old = images(request.old_object.as_ref()).unwrap_or_default();
    for container in changed_containers(new, &old) {
        // Whatever the object carries reaches the reference parser next.
        let _ = ImageRef::parse(&container.image);
    }
});
