-- DuckDB peer of Lookback's attribute(...) / attribute_channels(...) for bench/attribution_compare.py.
--
-- The rules are those of docs/attribution.md, with probabilistic_window = 0 (device matching
-- only, Lookback's default):
-- - conversions: rows of `events` whose event_type is one of `conversion` (comma-separated);
-- - candidates of a conversion c at time t: events of the same app_id and device_id (c.device_id
--   not null) that are a click with t - click_window <= ts <= t or an impression with
--   t - view_window <= ts <= t (both ends inclusive);
-- - click beats impression: if c has any click candidate, its impression candidates are dropped;
-- - the path is the remaining candidates in (ts, event_id) order; event_id is the canonical
--   lower-case UUID text here (loaded as VARCHAR), whose order is the order of its 16 bytes;
-- - no candidate: one 'organic' row with credit 1;
-- - revenue = credit * coalesce(c.revenue, 0).
--
-- Timestamps are TIMESTAMPTZ with the session time zone set to UTC, so 'N days' is exactly
-- N * 24 h, as in Lookback (no daylight-saving days).
--
-- The file has a setup part (the macros, run once) and named queries, each introduced by a
-- line `-- name: <query>` and ending with `;`. The script runs every named query as it stands.
-- The names match the Lookback queries they are the peers of.

SET TimeZone = 'UTC';

-- attribute_last_touch(...): one row per conversion, its last touch (or organic).
--
-- Last touch = the last candidate in path order. Since clicks beat impressions, that is the
-- latest click in the click window if there is one, otherwise the latest impression in the view
-- window. An ASOF join finds, per conversion, the touch with the greatest (ts, event_id) at or
-- before (c.ts, the largest UUID), i.e. the latest touch with ts <= c.ts, ties at equal ts
-- going to the larger event_id; the window's lower bound is checked afterwards. That is exact
-- for last touch: if the latest touch at or before t is older than the window, every earlier
-- one is too, so the window holds no touch of that kind.
CREATE OR REPLACE MACRO attribute_last_touch(
        conversion := 'install',
        click_window := INTERVAL '7 days',
        view_window := INTERVAL '1 day') AS TABLE
WITH conversions AS (
    SELECT event_id, app_id, device_id, ts, coalesce(revenue, 0) AS revenue
    FROM events
    WHERE event_type IN (SELECT trim(unnest(string_split(conversion, ','))))
),
clicks AS (
    SELECT app_id, device_id, ts, event_id, channel, campaign
    FROM events
    WHERE event_type = 'click' AND device_id IS NOT NULL
),
impressions AS (
    SELECT app_id, device_id, ts, event_id, channel, campaign
    FROM events
    WHERE event_type = 'impression' AND device_id IS NOT NULL
),
-- The latest click at or before each conversion (NULL when none, or none with a device_id).
latest_click AS (
    SELECT c.*, p.event_id AS click_id, p.ts AS click_ts, p.channel AS click_channel,
           p.campaign AS click_campaign
    FROM conversions c
    ASOF LEFT JOIN clicks p
      ON p.app_id = c.app_id AND p.device_id = c.device_id
     AND (p.ts, p.event_id) <= (c.ts, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
),
-- Conversions without a click in the click window look for an impression instead.
no_click AS (
    SELECT * FROM latest_click
    WHERE click_ts IS NULL OR click_ts < ts - click_window
),
latest_impression AS (
    SELECT c.event_id, p.event_id AS impression_id, p.ts AS impression_ts,
           p.channel AS impression_channel, p.campaign AS impression_campaign
    FROM no_click c
    ASOF JOIN impressions p
      ON p.app_id = c.app_id AND p.device_id = c.device_id
     AND (p.ts, p.event_id) <= (c.ts, 'ffffffff-ffff-ffff-ffff-ffffffffffff')
    WHERE p.ts >= c.ts - view_window
),
touched AS (
    SELECT l.*, i.impression_id, i.impression_ts, i.impression_channel, i.impression_campaign,
           l.click_ts IS NOT NULL AND l.click_ts >= l.ts - click_window AS by_click
    FROM latest_click l
    LEFT JOIN latest_impression i ON i.event_id = l.event_id
)
SELECT
    app_id,
    event_id AS conversion_id,
    ts AS conversion_time,
    device_id,
    CASE WHEN by_click THEN click_id ELSE impression_id END AS touch_id,
    CASE WHEN by_click THEN click_ts ELSE impression_ts END AS touch_time,
    CASE WHEN by_click THEN 'click' WHEN impression_id IS NOT NULL THEN 'impression' END AS touch_type,
    CASE WHEN by_click THEN click_channel
         WHEN impression_id IS NOT NULL THEN impression_channel
         ELSE 'organic' END AS channel,
    CASE WHEN by_click THEN click_campaign ELSE impression_campaign END AS campaign,
    CASE WHEN by_click OR impression_id IS NOT NULL THEN 'device' ELSE 'organic' END AS match_type,
    1.0::DOUBLE AS credit,
    revenue
FROM touched;

-- attribute_multi_touch(model, ...): linear or time_decay, one row per path touch (or one
-- organic row), the whole path of every conversion: a range join on (app_id, device_id) with
-- the window on ts.
CREATE OR REPLACE MACRO attribute_multi_touch(
        model,
        conversion := 'install',
        click_window := INTERVAL '7 days',
        view_window := INTERVAL '1 day',
        half_life := INTERVAL '7 days') AS TABLE
WITH conversions AS (
    SELECT event_id, app_id, device_id, ts, coalesce(revenue, 0) AS revenue
    FROM events
    WHERE event_type IN (SELECT trim(unnest(string_split(conversion, ','))))
),
click_candidates AS (
    SELECT c.app_id, c.event_id AS conversion_id, c.ts AS conversion_time, c.device_id,
           c.revenue AS conversion_revenue, p.event_id AS touch_id, p.ts AS touch_time,
           'click' AS touch_type, p.channel, p.campaign
    FROM conversions c
    JOIN events p
      ON p.app_id = c.app_id AND p.device_id = c.device_id
     AND p.ts BETWEEN c.ts - click_window AND c.ts
    WHERE p.event_type = 'click'
),
-- Click beats impression: impressions only for conversions with no click candidate.
impression_candidates AS (
    SELECT c.app_id, c.event_id AS conversion_id, c.ts AS conversion_time, c.device_id,
           c.revenue AS conversion_revenue, p.event_id AS touch_id, p.ts AS touch_time,
           'impression' AS touch_type, p.channel, p.campaign
    FROM conversions c
    JOIN events p
      ON p.app_id = c.app_id AND p.device_id = c.device_id
     AND p.ts BETWEEN c.ts - view_window AND c.ts
    WHERE p.event_type = 'impression'
      AND c.event_id NOT IN (SELECT conversion_id FROM click_candidates)
),
paths AS (
    SELECT * FROM click_candidates
    UNION ALL
    SELECT * FROM impression_candidates
),
credited AS (
    SELECT *,
           CASE model
               WHEN 'linear' THEN 1.0 / count(*) OVER conversion_path
               WHEN 'time_decay' THEN
                   pow(2.0, -(epoch_us(conversion_time) - epoch_us(touch_time)) / (epoch(half_life) * 1e6))
                   / sum(pow(2.0, -(epoch_us(conversion_time) - epoch_us(touch_time)) / (epoch(half_life) * 1e6)))
                         OVER conversion_path
               ELSE error('attribute_multi_touch: model must be linear or time_decay, not ' || model)
           END AS credit
    FROM paths
    WINDOW conversion_path AS (PARTITION BY conversion_id)
)
SELECT app_id, conversion_id, conversion_time, device_id, touch_id, touch_time, touch_type,
       channel, campaign, 'device' AS match_type, credit, credit * conversion_revenue AS revenue
FROM credited
UNION ALL
SELECT app_id, event_id, ts, device_id, NULL, NULL, NULL, 'organic', NULL, 'organic', 1.0, revenue
FROM conversions
WHERE event_id NOT IN (SELECT conversion_id FROM paths);

-- name: last_touch
SELECT count(*), sum(credit)
FROM attribute_last_touch(conversion := 'install', click_window := INTERVAL '7 days', view_window := INTERVAL '1 day');

-- name: last_touch_by_channel
SELECT channel, count(*), sum(revenue)
FROM attribute_last_touch()
GROUP BY channel ORDER BY channel;

-- name: last_touch_purchase_by_channel
SELECT channel, count(*), sum(revenue)
FROM attribute_last_touch(conversion := 'purchase')
GROUP BY channel ORDER BY channel;

-- name: linear
SELECT count(*), sum(credit)
FROM attribute_multi_touch('linear', conversion := 'install', click_window := INTERVAL '7 days', view_window := INTERVAL '1 day');

-- name: time_decay
SELECT count(*), sum(credit)
FROM attribute_multi_touch('time_decay', conversion := 'install', click_window := INTERVAL '7 days', view_window := INTERVAL '1 day');

-- name: channels_last_touch
SELECT channel, sum(credit) AS conversions, sum(revenue) AS revenue
FROM attribute_last_touch()
GROUP BY channel ORDER BY channel;

-- name: channels_linear
SELECT channel, sum(credit) AS conversions, sum(revenue) AS revenue
FROM attribute_multi_touch('linear')
GROUP BY channel ORDER BY channel;

-- name: channels_time_decay
SELECT channel, sum(credit) AS conversions, sum(revenue) AS revenue
FROM attribute_multi_touch('time_decay')
GROUP BY channel ORDER BY channel;
