//! `--log-format json`: one JSON object per line, in the shape of tracing-subscriber's own JSON
//! format (`timestamp`, `level`, `fields`, `target`, and `span`/`spans` inside a span), written
//! straight into the line buffer. tracing-subscriber's formatter runs each field through serde
//! into an `io::Write` adaptor that re-checks every piece as UTF-8, and allocates the timestamp:
//! with one line per admission that was a tenth of a warm admission's CPU.

use std::fmt::{self, Write};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormattedFields,
        format::{JsonFields, Writer},
    },
    registry::LookupSpan,
};

/// The event formatter; pair it with [`JsonFields`] so that span fields are JSON too.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records bridged from the `log` crate carry their real level and target in fields.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write!(
            writer,
            "{{\"timestamp\":\"{:.6}\",\"level\":\"{}\",\"fields\":{{",
            jiff::Timestamp::now(),
            metadata.level()
        )?;
        let mut fields = FieldWriter { out: &mut writer, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        write_string(&mut writer, metadata.target())?;
        let current = event.parent().and_then(|id| context.span(id)).or_else(|| context.lookup_current());
        if let Some(current) = current {
            writer.write_str(",\"span\":")?;
            write_span(&mut writer, &current)?;
            writer.write_str(",\"spans\":[")?;
            for (index, span) in current.scope().from_root().enumerate() {
                if index > 0 {
                    writer.write_char(',')?;
                }
                write_span(&mut writer, &span)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// `{...fields, "name": ...}`, from the JSON object [`JsonFields`] stored for the span.
fn write_span<S>(out: &mut Writer<'_>, span: &tracing_subscriber::registry::SpanRef<'_, S>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    let fields = extensions
        .get::<FormattedFields<JsonFields>>()
        .map(|formatted| formatted.fields.as_str())
        .and_then(|json| json.strip_prefix('{')?.strip_suffix('}'))
        .unwrap_or("");
    out.write_char('{')?;
    if !fields.trim().is_empty() {
        out.write_str(fields)?;
        out.write_char(',')?;
    }
    out.write_str("\"name\":")?;
    write_string(out, span.name())?;
    out.write_char('}')
}

struct FieldWriter<'w, 'b> {
    out: &'w mut Writer<'b>,
    first: bool,
    /// `Visit` cannot fail; the first write error is kept and returned after the visit.
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| write_string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_string(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: they go out as text (serde_json would write `null`).
        // Debug keeps the `.0` of whole numbers, so they read back as floats.
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value:?}"));
        } else {
            self.field(field, |out| write!(out, "\"{value}\""));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaping(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn write_string(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaping(&mut *out).write_str(text)?;
    out.write_char('"')
}

/// Writes text as the inside of a JSON string: runs of plain characters at once, escapes for
/// quotes, backslashes and control characters.
struct Escaping<W>(W);

impl<W: Write> Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Slicing at an ASCII byte always lands on a character boundary.
            self.0.write_str(&text[plain_from..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain_from = index + 1;
        }
        self.0.write_str(&text[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    use pullguard_tests::logs::LogBuffer;
    use serde_json::{Value, json};
    use tracing::{info, info_span, subscriber::with_default, warn};

    use super::*;

    fn parsed(logs: &LogBuffer) -> Vec<Value> {
        let text = logs.text();
        assert!(text.ends_with('\n'), "every line ends: {text:?}");
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    /// The same events through pullguard's formatter and through tracing-subscriber's own JSON.
    fn both(emit: impl Fn()) -> (Vec<Value>, Vec<Value>) {
        let ours = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(ours.clone())
            .finish();
        with_default(subscriber, &emit);
        let theirs = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt().json().with_writer(theirs.clone()).finish();
        with_default(subscriber, &emit);
        (parsed(&ours), parsed(&theirs))
    }

    fn without_timestamp(mut line: Value) -> Value {
        let timestamp = line.as_object_mut().unwrap().remove("timestamp").unwrap();
        let timestamp = timestamp.as_str().unwrap();
        assert!(timestamp.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {timestamp}");
        assert_eq!(timestamp.len(), "2026-12-02T01:03:58.511764Z".len(), "{timestamp}");
        line
    }

    #[test]
    fn lines_have_the_shape_and_values_of_tracing_subscribers_json() {
        let awkward = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} é 雪 🦀";
        let (ours, theirs) = both(|| {
            info!(
                uid = "abc",
                text = awkward,
                flag = true,
                count = 3u64,
                delta = -4i64,
                ratio = 0.25,
                "admission"
            );
            warn!(shown = %awkward, debugged = ?Some(awkward), "second {}", 2);
            let span = info_span!("outer", request = "r1", attempt = 2u64);
            let _outer = span.enter();
            let inner = info_span!("inner");
            let _inner = inner.enter();
            info!("in spans");
        });
        assert_eq!(ours.len(), 3);
        for (ours, theirs) in ours.into_iter().zip(theirs) {
            assert_eq!(without_timestamp(ours), without_timestamp(theirs));
        }
    }

    /// rustls and other dependencies log through the `log` crate; their lines carry the
    /// record's own level and target, as tracing-subscriber's do.
    #[test]
    fn records_from_the_log_crate_keep_their_level_and_target() {
        let (ours, theirs) = both(|| {
            let record = log::Record::builder()
                .level(log::Level::Warn)
                .target("rustls::client")
                .args(format_args!("certificate \"expired\""))
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        assert_eq!(ours[0]["level"], "WARN");
        assert_eq!(ours[0]["target"], "rustls::client");
        assert_eq!(ours[0]["fields"]["message"], "certificate \"expired\"");
        assert_eq!(without_timestamp(ours[0].clone()), without_timestamp(theirs[0].clone()));
    }

    #[test]
    fn numbers_stay_numbers_and_text_stays_text() {
        let (ours, _) = both(|| {
            info!(elapsed_ms = 12u128, below = -7i128, not_a_number = f64::NAN, message_like = "x");
        });
        assert_eq!(
            ours[0]["fields"],
            json!({"elapsed_ms": 12, "below": -7, "not_a_number": "NaN", "message_like": "x"})
        );
        assert_eq!(ours[0]["level"], "INFO");
        assert_eq!(ours[0]["target"], module_path!());
        assert!(ours[0].get("span").is_none() && ours[0].get("spans").is_none());
    }

    #[test]
    fn every_control_character_is_escaped() {
        let mut text = String::new();
        let all: String = (0u8..0x20).map(char::from).chain("\"\\plain".chars()).collect();
        write_string(&mut text, &all).unwrap();
        assert_eq!(serde_json::from_str::<String>(&text).unwrap(), all);
        assert!(!text.bytes().any(|byte| byte < 0x20), "{text:?}");
    }
}
