//! AdmissionReview bodies as the API server would POST them: decode, find the pod spec of the
//! kind in `object` and `oldObject`, list the containers. Nothing here may panic: a malformed
//! review must become an error (HTTP 400) or an "unreadable" allow, never a crashed handler.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pullguard::{
    admission::{
        ReviewRequest,
        review::RawObject,
        workload::{WorkloadKind, changed_containers, containers},
    },
    reference::ImageRef,
};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ReviewRequest::decode(data) else { return };
    let Some(kind) = WorkloadKind::from_group_kind(&request.kind.group, &request.kind.kind) else { return };
    let images = |object: Option<RawObject<'_>>| {
        let object = object?;
        let _ = object.metadata();
        let spec = kind.pod_spec_json(object).ok()?;
        Some(containers(&spec))
    };
    let new = images(request.object).unwrap_or_default();
    let old = images(request.old_object).unwrap_or_default();
    for container in changed_containers(new, &old) {
        // Whatever the object carries reaches the reference parser next.
        let _ = ImageRef::parse(&container.image);
    }
});
