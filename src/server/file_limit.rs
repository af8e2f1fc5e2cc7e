//! Recognising the server's refusal of a query that would read more Parquet files than its
//! `--query-file-limit` allows.
//!
//! No release gives the error a structure of its own: 3.0.3 and 3.10 both answer HTTP 500 with
//! a plain-text body (checked on both servers). What tells it apart is the message, which
//! changed in 3.8; each release's text is recognised, and the limit it names read from it. A
//! JSON body (`{"error": "..."}`, as other endpoints answer) is looked into too.

/// The server refused a query for its file limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit the message names (3.8+ prints the limit, not the count, despite its words).
    pub limit: Option<u64>,
    /// Which wording it was.
    pub wording: Wording,
}

/// The releases' wordings of the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wording {
    /// 3.0 to 3.7: "Query would exceed file limit of 432 parquet files. ..."
    Before3_8,
    /// 3.8 and later: "Query would scan 432 Parquet files, exceeding the file limit. ..."
    Since3_8,
}

impl FileLimit {
    /// The file limit error in an answer with `status` and `body`, if it is one.
    pub fn recognise(status: u16, body: &str) -> Option<FileLimit> {
        // A refusal is never a success; the server says 500, a proxy might say 4xx.
        if status < 400 {
            return None;
        }
        let json_message = serde_json::from_str::<serde_json::Value>(body.trim())
            .ok()
            .and_then(|v| {
                ["error", "message"]
                    .iter()
                    .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
            });
        let text = json_message.as_deref().unwrap_or(body);
        if let Some(rest) = after(text, "Query would scan ") {
            let (n, rest) = leading_number(rest);
            if rest
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("parquet files, exceeding the file limit")
            {
                return Some(FileLimit {
                    limit: n,
                    wording: Wording::Since3_8,
                });
            }
        }
        if let Some(rest) = after(text, "Query would exceed file limit of ") {
            let (n, rest) = leading_number(rest);
            if rest
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("parquet files")
            {
                return Some(FileLimit {
                    limit: n,
                    wording: Wording::Before3_8,
                });
            }
        }
        None
    }
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|i| &text[i + marker.len()..])
}

fn leading_number(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (s[..end].parse().ok(), &s[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies the real servers answered to `SELECT count(*) FROM cpu` with
    /// `--query-file-limit 1` (HTTP 500, text/plain), cut after the part that identifies them.
    const SERVER_3_10: &str = "External error: Query would scan 1 Parquet files, exceeding the file limit. InfluxDB 3 Core caps file access to prevent performance degradation and memory issues. Use a narrower time range, or increase the limit with --query-file-limit (this may cause slower queries or instability).\n\nTo remove this limitation, upgrade to InfluxDB 3 Enterprise";
    const SERVER_3_0_3: &str = "query error: error while planning query: External error: Query would exceed file limit of 1 parquet files. Please specify a smaller time range for your query. You can increase the file limit with the `--query-file-limit` option in the serve command";
    /// 3.8 and later, through the query executor (the server's own test of the default limit).
    const EXECUTOR_3_8: &str = "error while planning query: External error: Query would scan 432 Parquet files, exceeding the file limit. InfluxDB 3 Core caps file access";

    #[test]
    fn each_releases_wording_is_recognised_with_its_limit() {
        assert_eq!(
            FileLimit::recognise(500, SERVER_3_10),
            Some(FileLimit {
                limit: Some(1),
                wording: Wording::Since3_8
            })
        );
        assert_eq!(
            FileLimit::recognise(500, SERVER_3_0_3),
            Some(FileLimit {
                limit: Some(1),
                wording: Wording::Before3_8
            })
        );
        assert_eq!(
            FileLimit::recognise(500, EXECUTOR_3_8).unwrap().limit,
            Some(432)
        );
        let json = serde_json::json!({ "error": SERVER_3_10 }).to_string();
        assert_eq!(FileLimit::recognise(400, &json).unwrap().limit, Some(1));
    }

    #[test]
    fn other_errors_and_successes_are_not_the_file_limit() {
        assert_eq!(FileLimit::recognise(200, SERVER_3_10), None);
        for body in [
            "Schema error: No field named nosuch. Valid fields are cpu.cores, cpu.cpu.",
            "query error: error while planning query: Schema error: No field named x.",
            "Query would scan the file limit of everything",
            "",
        ] {
            assert_eq!(FileLimit::recognise(500, body), None, "{body}");
        }
    }
}
