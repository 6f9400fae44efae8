use super::*;
use crate::load::Answer;

fn record(kind: Kind, allowed: bool, codes: &[&str], at: Instant) -> Record {
    let answer = Answer {
        status: 200,
        uid_matches: true,
        allowed,
        codes: codes.iter().map(|c| c.to_string()).collect(),
        warnings: usize::from(allowed && !codes.is_empty()),
        first_warning: None,
        peer_certificate: None,
    };
    Record {
        phase: Phase::Soak,
        via: Via::KeepAlive,
        kind,
        sent: at,
        done: at + Duration::from_millis(1),
        result: Ok(answer),
    }
}

#[test]
fn answers_are_classified_by_the_documented_behaviour() {
    let t0 = Instant::now();
    let down = [(t0 + Duration::from_secs(10), t0 + Duration::from_secs(20))];
    let up = t0;
    let during = t0 + Duration::from_secs(15);
    let cases = [
        (record(Kind::Cached, true, &[], up), Class::Allowed),
        (record(Kind::Cached, true, &[], during), Class::Allowed),
        (record(Kind::Rolling, true, &["PG501"], during), Class::FailOpen),
        (record(Kind::Missing, true, &["PG501", "PG501"], during), Class::FailOpen),
        (record(Kind::Missing, false, &["PG101"], up), Class::ExpectedDeny),
        (record(Kind::Missing, false, &["PG101", "PG501"], during), Class::ExpectedDeny),
    ];
    for (record, expected) in cases {
        assert_eq!(classify(&record, &down), expected, "{record:?}");
    }
    let failures = [
        record(Kind::Cached, true, &["PG501"], up),
        record(Kind::Missing, true, &[], up),
        record(Kind::Cached, false, &["PG101"], up),
        record(Kind::Cached, true, &["PG601"], up),
        record(Kind::Missing, false, &["PG101", "PG501"], up),
    ];
    for record in failures {
        assert!(matches!(classify(&record, &down), Class::Failure(_)), "{record:?}");
    }
    let mut no_warning_line = record(Kind::Cached, true, &["PG501"], during);
    if let Ok(answer) = &mut no_warning_line.result {
        answer.warnings = 0;
    }
    assert!(matches!(classify(&no_warning_line, &down), Class::Failure(_)));
    let mut broken = record(Kind::Cached, true, &[], up);
    broken.result = Err("error sending request: connection reset".into());
    assert_eq!(classify(&broken, &down), Class::Failure("transport: connection reset".into()));
}

#[test]
fn millisecond_counts_are_folded() {
    assert_eq!(
        without_millis("PG504 app: backing off for 1834ms, port 5000"),
        "PG504 app: backing off for Nms, port 5000"
    );
    assert_eq!(without_millis("42"), "42");
}

#[test]
fn counters_are_summed_by_result() {
    let text = "pullguard_certificate_reloads_total{result=\"swapped\"} 3\n\
                pullguard_certificate_reloads_total{result=\"rejected\"} 1\n";
    assert_eq!(metric_sum(text, "pullguard_certificate_reloads_total", "swapped"), 3.0);
    assert_eq!(metric_sum(text, "pullguard_certificate_reloads_total", "missing"), 0.0);
}
