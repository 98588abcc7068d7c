//! The last hour of each token's budget figures, sampled every few seconds, for the status
//! page's requests-per-minute chart. The budget itself keeps only counters since it was built
//! (`Budget::stats`); the chart needs their course over time, which only sampling gives.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How often the sampler reads every budget.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How much history is kept (and charted).
pub const KEEP: chrono::Duration = chrono::Duration::hours(1);

/// One reading of a token's budget counters (cumulative since the budget was built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Requests counted against the quota.
    pub spent: u64,
}

/// A point of the chart: requests in the minute before `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    /// The sample's time.
    pub at: DateTime<Utc>,
    /// Requests counted in the trailing minute (less than a minute at the history's start).
    pub per_minute: f64,
}

/// The samples of every token, by name.
#[derive(Debug, Default)]
pub struct TokenHistory {
    samples: Mutex<BTreeMap<String, VecDeque<Sample>>>,
}

impl TokenHistory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VecDeque<Sample>>> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sample of `token`, forgetting those older than [`KEEP`].
    pub fn record(&self, token: &str, sample: Sample) {
        let mut samples = self.lock();
        let series = samples.entry(token.to_string()).or_default();
        series.push_back(sample);
        while series
            .front()
            .is_some_and(|first| first.at < sample.at - KEEP)
        {
            series.pop_front();
        }
    }

    /// Requests per minute of `token` at each sample, plus `live` (a reading taken now) when
    /// given: the requests counted in the minute before each point. A budget that was rebuilt
    /// (its counters restart at zero) counts from its new start.
    pub fn rates(&self, token: &str, live: Option<Sample>) -> Vec<RatePoint> {
        let samples = self.lock();
        let mut series: Vec<Sample> = samples
            .get(token)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        drop(samples);
        if let Some(live) = live
            && series.last().is_none_or(|last| last.at < live.at)
        {
            series.push(live);
        }
        rates_of(&series)
    }
}

/// The trailing-minute rate at every sample of `series` (oldest first).
pub fn rates_of(series: &[Sample]) -> Vec<RatePoint> {
    let minute = chrono::Duration::minutes(1);
    series
        .iter()
        .enumerate()
        .map(|(i, sample)| {
            // The newest sample at least a minute older, else the oldest one: before it the
            // budget did not exist or was not sampled, and its counters started at zero.
            let base = series[..i]
                .iter()
                .rev()
                .find(|earlier| earlier.at <= sample.at - minute)
                .or_else(|| series.first().filter(|_| i > 0));
            let per_minute = match base {
                Some(base) if base.spent <= sample.spent => sample.spent - base.spent,
                // No earlier reading, or the counters restarted: all of it is recent.
                _ => sample.spent,
            };
            RatePoint {
                at: sample.at,
                per_minute: per_minute as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn each_point_counts_the_minute_before_it() {
        let history = TokenHistory::default();
        for (secs, spent) in [(0, 0), (30, 100), (60, 250), (90, 250), (120, 400)] {
            history.record(
                "sa",
                Sample {
                    at: at(secs),
                    spent,
                },
            );
        }
        let rates: Vec<f64> = history
            .rates("sa", None)
            .iter()
            .map(|p| p.per_minute)
            .collect();
        assert_eq!(rates, [0.0, 100.0, 250.0, 150.0, 150.0]);
        // A live reading is the last point; a rebuilt budget counts from zero.
        let live = history.rates(
            "sa",
            Some(Sample {
                at: at(150),
                spent: 7,
            }),
        );
        assert_eq!(live.last().unwrap().per_minute, 7.0);
        assert!(history.rates("nobody", None).is_empty());
    }

    #[test]
    fn an_hour_is_kept() {
        let history = TokenHistory::default();
        for minute in 0..=120 {
            history.record(
                "sa",
                Sample {
                    at: at(minute * 60),
                    spent: minute as u64,
                },
            );
        }
        let rates = history.rates("sa", None);
        assert_eq!(rates.len(), 61);
        assert_eq!(rates.first().unwrap().at, at(60 * 60));
    }
}
