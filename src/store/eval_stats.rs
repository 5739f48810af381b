//! Summaries of evaluation scores: trends per time bucket, the spread of a
//! metric's scores, two windows compared, and agreement with human feedback.

use rusqlite::params;

use super::{Result, Store};

/// One bucket of `GET /v1/eval/trends`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendBucket {
    pub start: i64,
    pub metric: String,
    pub avg_score: f64,
    pub count: u64,
    pub passed: u64,
}

/// Scores of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    pub avg_score: f64,
    pub count: u64,
    pub passed: u64,
}

/// A trace's mean score for a metric beside its human feedback.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreementPair {
    pub score: f64,
    /// good → 1, neutral → 0.5, bad → 0 (the mean over the trace's feedback).
    pub human: f64,
}

impl Store {
    /// Mean score, count and passes (score ≥ 0.5) of complete evaluations
    /// per time bucket (`width` microseconds, aligned to the epoch) and metric.
    pub async fn eval_trends(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: Option<String>,
        from: i64,
        to: i64,
        width: i64,
    ) -> Result<Vec<TrendBucket>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT (created_at / ?5) * ?5 AS bucket, metric_name, avg(score), count(*), \
                 sum(score >= 0.5) FROM evaluations \
                 WHERE tenant_id = ?1 AND project_id = ?2 AND status = 'complete' \
                 AND score IS NOT NULL AND created_at BETWEEN ?3 AND ?4 \
                 AND (?6 IS NULL OR metric_name = ?6) \
                 GROUP BY bucket, metric_name ORDER BY bucket, metric_name",
            )?;
            let rows = stmt.query_map(
                params![tenant_id, project_id, from, to, width, metric],
                |r| {
                    Ok(TrendBucket {
                        start: r.get(0)?,
                        metric: r.get(1)?,
                        avg_score: r.get(2)?,
                        count: r.get::<_, i64>(3)?.max(0) as u64,
                        passed: r.get::<_, i64>(4)?.max(0) as u64,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Counts of complete scores of `metric` in `buckets` equal ranges of
    /// [0, 1] (the last one closed).
    pub async fn eval_histogram(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: String,
        from: i64,
        to: i64,
        buckets: usize,
    ) -> Result<Vec<u64>> {
        self.read(move |conn| {
            let mut counts = vec![0u64; buckets.max(1)];
            let mut stmt = conn.prepare_cached(
                "SELECT min(CAST(score * ?6 AS INTEGER), ?6 - 1), count(*) FROM evaluations \
                 WHERE tenant_id = ?1 AND project_id = ?2 AND metric_name = ?3 \
                 AND status = 'complete' AND score IS NOT NULL AND created_at BETWEEN ?4 AND ?5 \
                 GROUP BY 1",
            )?;
            let rows = stmt.query_map(
                params![tenant_id, project_id, metric, from, to, counts.len() as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )?;
            for row in rows {
                let (bucket, count) = row?;
                let bucket = bucket.clamp(0, counts.len() as i64 - 1) as usize;
                counts[bucket] += count.max(0) as u64;
            }
            Ok(counts)
        })
        .await
    }

    /// The scores of `metric` in a window.
    pub async fn eval_window(
        &self,
        tenant_id: i64,
        project_id: i64,
        metric: String,
        from: i64,
        to: i64,
    ) -> Result<WindowStats> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT coalesce(avg(score), 0), count(*), coalesce(sum(score >= 0.5), 0) \
                     FROM evaluations WHERE tenant_id = ?1 AND project_id = ?2 \
                     AND metric_name = ?3 AND status = 'complete' AND score IS NOT NULL \
                     AND created_at BETWEEN ?4 AND ?5",
                )?
                .query_row(params![tenant_id, project_id, metric, from, to], |r| {
                    Ok(WindowStats {
                        avg_score: r.get(0)?,
                        count: r.get::<_, i64>(1)?.max(0) as u64,
                        passed: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })?)
        })
        .await
    }

    /// For each trace with both a complete `metric` evaluation and feedback
    /// (evaluated in the window), its mean score beside its mean human label.
    pub async fn eval_agreement(
        &self,
        tenant_id: i64,
        project_id: Option<i64>,
        metric: String,
        from: i64,
        to: i64,
    ) -> Result<Vec<AgreementPair>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT s.score, h.human FROM \
                 (SELECT trace_seq, avg(score) AS score FROM evaluations \
                  WHERE tenant_id = ?1 AND (?2 IS NULL OR project_id = ?2) AND metric_name = ?3 \
                  AND status = 'complete' AND score IS NOT NULL AND created_at BETWEEN ?4 AND ?5 \
                  GROUP BY trace_seq) s \
                 JOIN (SELECT trace_seq, avg(CASE label WHEN 'good' THEN 1.0 \
                       WHEN 'bad' THEN 0.0 ELSE 0.5 END) AS human \
                       FROM feedback WHERE tenant_id = ?1 GROUP BY trace_seq) h \
                 ON h.trace_seq = s.trace_seq LIMIT 1000000",
            )?;
            let rows = stmt.query_map(params![tenant_id, project_id, metric, from, to], |r| {
                Ok(AgreementPair {
                    score: r.get(0)?,
                    human: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
