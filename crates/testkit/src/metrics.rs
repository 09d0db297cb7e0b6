//! Reading a Prometheus text exposition (`GET /metrics`) the way tests ask
//! about it: one series' value, or the sum of a metric's samples whose
//! labels include a given pair.

/// The value of `series` (the metric name and labels exactly as exposed)
/// in the exposition `text`; 0 when the series is absent, as a counter
/// that never moved.
pub fn sample(text: &str, series: &str) -> f64 {
    Samples::parse(text).get(series).unwrap_or(0.0)
}

/// The samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// `(series, value)`: the series as written (`name{labels}` or `name`).
    samples: Vec<(String, f64)>,
}

impl Samples {
    /// Parses an exposition; comments and lines that are not samples are
    /// skipped.
    pub fn parse(text: &str) -> Samples {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.trim().to_string(), value.parse().ok()?))
            })
            .collect();
        Samples { samples }
    }

    /// Scrapes `url` (a `/metrics` URL) and parses the answer.
    pub async fn scrape(url: &str) -> Samples {
        let response = reqwest::get(url)
            .await
            .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
        assert!(response.status().is_success(), "{url}: {response:?}");
        Samples::parse(&response.text().await.expect("reading a scrape"))
    }

    /// The value of exactly `series`, e.g.
    /// `labrelay_broker_backlog_messages{subscription="x"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, value)| *value)
    }

    /// The sum of `metric`'s samples whose labels include `label` (e.g.
    /// `outcome="duplicate"`; empty: every sample of the metric).
    pub fn sum(&self, metric: &str, label: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                series
                    .strip_prefix(metric)
                    .is_some_and(|labels| labels.is_empty() || labels.starts_with('{'))
                    && series.contains(label)
            })
            .map(|(_, value)| value)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_series_and_sums_by_label() {
        let samples = Samples::parse(
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{outcome=\"sent\",channel=\"sms\"} 3\n\
             x_total{outcome=\"duplicate\",channel=\"sms\"} 2\n\
             x_total_created 1.7e9\n\
             up 1\n",
        );
        assert_eq!(
            samples.get("x_total{outcome=\"sent\",channel=\"sms\"}"),
            Some(3.0)
        );
        assert_eq!(samples.get("up"), Some(1.0));
        assert_eq!(samples.get("x_total"), None);
        assert_eq!(samples.sum("x_total", "channel=\"sms\""), 5.0);
        assert_eq!(samples.sum("x_total", "outcome=\"duplicate\""), 2.0);
        assert_eq!(
            samples.sum("x_total", ""),
            5.0,
            "x_total_created is another metric"
        );
    }
}
