-- Spans stored after a later trace's spans (see `store::span_search`).
--
-- Span search lists spans by key (`rid`), newest stored first, but finds
-- them through the traces that match, which it reads newest stored first
-- (highest `seq` first). The two orders agree for a trace's spans stored
-- with it: every span of a trace is stored after every span sent with an
-- earlier trace. They disagree only for a span added to a trace after a
-- later trace was stored (OTLP spans of one trace sent in several
-- requests). This table names those spans, so that a search that has read
-- the traces down to some seq knows every span above a key.
--
-- Ingest adds a row when it adds spans to a stored trace that is not the
-- newest; a span deleted takes its row with it. The row holds the span's
-- trace too, so that a search reads the rows alone.
CREATE TABLE late_spans (
    rid        INTEGER PRIMARY KEY REFERENCES spans(rid) ON DELETE CASCADE,
    trace_seq  INTEGER NOT NULL
);

-- The spans stored so far that some span of a later trace precedes: those
-- whose key is above the lowest key of every later trace's spans.
INSERT INTO late_spans (rid, trace_seq)
SELECT rid, trace_seq FROM (
    SELECT rid, trace_seq,
           min(rid) OVER (ORDER BY trace_seq DESC
                          RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS later
    FROM spans)
WHERE rid > later;
