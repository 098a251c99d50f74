#![allow(clippy::unwrap_used)] // tests

use std::time::Duration;

use super::*;

#[test]
fn writes_families_labels_and_histograms_that_parse_back() {
    static BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
    let h = Histogram::new(BOUNDS);
    h.observe(Duration::from_micros(500)); // <= 0.001
    h.observe(Duration::from_millis(1)); // == the bound: counts in it
    h.observe(Duration::from_millis(50)); // <= 0.1
    h.observe(Duration::from_secs(2)); // over every bound
    let snap = h.snapshot();
    assert_eq!(snap.cumulative, vec![2, 2, 3]);
    assert_eq!(snap.count, 4);
    assert!(
        (snap.sum_seconds - 2.0515).abs() < 1e-9,
        "{}",
        snap.sum_seconds
    );

    let mut e = Exposition::new();
    e.single("up_total", Kind::Counter, "Line one.\nA \\ backslash.", 3);
    e.family("calls_total", Kind::Counter, "Calls.");
    e.sample("calls_total", &[("method", "Get"), ("code", "OK")], 2);
    e.sample(
        "calls_total",
        &[("method", "a\"b\\c\nd"), ("code", "OK")],
        1,
    );
    e.family("latency_seconds", Kind::Histogram, "Latency.");
    e.histogram("latency_seconds", &[("op", "get")], &snap);
    e.single("feed_up", Kind::Gauge, "Feed.", 0);
    let text = e.finish();
    assert!(
        text.starts_with(
            "# HELP up_total Line one.\\nA \\\\ backslash.\n# TYPE up_total counter\nup_total 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("latency_seconds_bucket{op=\"get\",le=\"0.001\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"),
        "{text}"
    );

    let scrape = parse(&text).unwrap();
    assert_eq!(
        scrape.family("up_total").unwrap().help.as_deref(),
        Some("Line one.\nA \\ backslash.")
    );
    assert_eq!(scrape.value("up_total", &[]), Some(3.0));
    assert_eq!(
        scrape.value("calls_total", &[("code", "OK"), ("method", "a\"b\\c\nd")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("latency_seconds_count", &[("op", "get")]),
        Some(4.0)
    );
    assert_eq!(
        scrape.value("latency_seconds_bucket", &[("op", "get"), ("le", "0.1")]),
        Some(3.0)
    );
    assert_eq!(scrape.family("latency_seconds").unwrap().kind, "histogram");
    assert_eq!(scrape.value("feed_up", &[]), Some(0.0));
}

#[test]
fn labeled_counters_count_each_value() {
    static VALUES: &[&str] = &["ok", "denied"];
    let c = LabeledCounter::new(VALUES);
    c.inc(1);
    c.inc(1);
    c.inc(7); // ignored
    assert_eq!(c.read().collect::<Vec<_>>(), vec![("ok", 0), ("denied", 2)]);
}

#[test]
fn the_parser_refuses_what_a_scraper_would_not_take() {
    let bad = [
        ("x 1", "end with a newline"),
        ("x 1\n", "outside its family"),
        (
            "# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",
            "appeared before",
        ),
        ("# TYPE x counter\nx -1\n", "below zero"),
        ("# TYPE x counter\nx one\n", "invalid value"),
        ("# TYPE x gauge\n# TYPE x gauge\n", "second TYPE"),
        (
            "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n",
            "outside its family",
        ),
        ("# TYPE x gauge\nx{a=1} 1\n", "double quotes"),
        ("# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n", "named twice"),
        ("# TYPE x gauge\nx{a=\"1\" b=\"2\"} 1\n", "separated"),
        ("# TYPE x gauge\nx{1a=\"1\"} 1\n", "invalid label name"),
        ("# TYPE x gauge\nx{a=\"\\q\"} 1\n", "invalid escape"),
        ("# TYPE x gauge\nx 1 12.5\n", "timestamp"),
        ("# TYPE x fancy\n", "unknown type"),
        ("# HELP x Help.\n", "without a TYPE"),
        ("# TYPE 1x gauge\n", "invalid metric name"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "fewer",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "+Inf",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "does not equal",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
            "_sum",
        ),
    ];
    for (text, why) in bad {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(why), "{text:?}: {e}");
    }
    // Accepted: comments, blank lines, a timestamp, HELP after TYPE, special floats.
    let ok = "# a comment\n\n# TYPE x gauge\n# HELP x X.\nx{a=\"1\",} NaN 1700000000000\nx +Inf\n";
    let s = parse(ok).unwrap();
    assert_eq!(s.family("x").unwrap().help.as_deref(), Some("X."));
    assert_eq!(s.value("x", &[]), Some(f64::INFINITY));
}
