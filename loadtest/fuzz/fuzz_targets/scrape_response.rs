//! Fuzz the load tester's reading of a metrics endpoint's reply (the only network bytes it
//! parses itself; game packets go through tickwire-client): the HTTP response framing
//! (`http_body`, including chunked bodies) and the Prometheus text parser, then the
//! histogram quantile over whatever buckets came out. None of it may panic.
//!
//! `tickwire-loadtest` is a binary crate, so the module is compiled in by path.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/scrape.rs"]
mod scrape;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let at = Instant::now();
    if let Ok(body) = scrape::http_body(data) {
        let _ = scrape::Scrape::parse(&String::from_utf8_lossy(&body), at);
    }
    let page = scrape::Scrape::parse(&String::from_utf8_lossy(data), at);
    for base in ["tick_duration_ms", "tick_lateness_ms", "a"] {
        if let Some(buckets) = page.buckets(base) {
            for q in [0.0, 0.5, 0.99, 1.0] {
                let _ = scrape::histogram_quantile(q, &buckets);
            }
            let _ = scrape::bucket_delta(&buckets, &buckets);
        }
    }
    let _ = scrape::cpu_cores(&page, &page);
});
