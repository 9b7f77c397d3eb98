-- The cron parser and the next-slot computation, with time zones and daylight-saving changes,
-- and the schedule()/unschedule() API. (Firing is covered by the TAP tests.)
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- The next n slots of an expression after a start time, shown in the expression's time zone.
CREATE FUNCTION pg_temp.slots(expr text, tz text, start timestamptz, n int) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    spec jsonb := cloacina._cron_parse(expr);
    t timestamptz := start;
BEGIN
    FOR i IN 1 .. n LOOP
        t := cloacina._cron_next(spec, tz, t);
        RETURN NEXT to_char(t AT TIME ZONE tz, 'Dy YYYY-MM-DD HH24:MI:SS') || ' ' || tz;
    END LOOP;
END $$;

-- Fields: lists, ranges, steps, names, weekday 7 = Sunday, 6 fields with seconds.
SELECT cloacina._cron_parse('*/15 9-17 * * MON-FRI');
SELECT cloacina._cron_parse('0,30 */2 1,15 jan,jul sun,7');
SELECT cloacina._cron_parse('*/20 * * * * *') -> 'second' AS seconds;
SELECT cloacina._cron_parse('5/20 * * * *') -> 'minute' AS minutes_from_5;

SELECT pg_temp.slots('*/15 9-17 * * MON-FRI', 'UTC', '2026-11-27 16:50:00+00', 5);
SELECT pg_temp.slots('*/20 * * * * *', 'UTC', '2026-11-27 23:59:30+00', 4);
-- day-of-month and weekday both restricted: either matches (the 13th, or any Friday)
SELECT pg_temp.slots('0 0 13 * FRI', 'UTC', '2026-03-01 00:00:00+00', 4);
-- 31st of the month skips short months; 29 February waits for a leap year
SELECT pg_temp.slots('0 12 31 * *', 'UTC', '2026-01-01 00:00:00+00', 3);
SELECT pg_temp.slots('0 0 29 2 *', 'UTC', '2026-01-01 00:00:00+00', 1);

-- Time zones: 09:00 in New York stays 09:00 local across the spring change (the UTC hour moves)
SELECT s, t AT TIME ZONE 'UTC' AS utc
  FROM (SELECT s, (regexp_replace(s, '^\w+ (\S+ \S+) .*$', '\1')::timestamp AT TIME ZONE 'America/New_York') AS t
          FROM pg_temp.slots('0 9 * * *', 'America/New_York', '2026-03-06 12:00:00+00', 4) s) x;
-- A slot in the spring-forward gap (02:30 does not exist on 8 March 2026 in New York) fires
-- when the gap ends; on the fall-back day the repeated 01:30 fires once.
SELECT pg_temp.slots('30 2 * * *', 'America/New_York', '2026-03-07 12:00:00+00', 3);
SELECT cloacina._cron_next(cloacina._cron_parse('30 1 * * *'), 'America/New_York', '2026-11-01 04:00:00+00') AT TIME ZONE 'UTC' AS fall_back_slot,
       cloacina._cron_next(cloacina._cron_parse('30 1 * * *'), 'America/New_York', '2026-11-01 05:31:00+00') AT TIME ZONE 'UTC' AS next_day_slot;
SELECT pg_temp.slots('0 */6 * * *', 'Asia/Kolkata', '2026-06-01 00:00:00+00', 3);

-- Bad expressions are refused with the field named.
SELECT e, pg_temp.try(format('SELECT cloacina._cron_parse(%L)', e)) AS result
  FROM unnest(ARRAY['', '* * * *', '* * * * * * *', '60 * * * *', '* 24 * * *', '* * 0 * *',
                    '* * 32 * *', '* * * 13 *', '* * * * 8', '*/0 * * * *', '5-1 * * * *',
                    'a * * * *', '* * * FOO *', '1,,2 * * * *', '*/5/5 * * * *', '-1 * * * *']) e;

SELECT schema_name FROM cloacina.create_tenant('tenant_cron');
SET search_path = tenant_cron;
SELECT cloacina.register_workflow('{"name": "nightly", "tasks": [{"id": "report"}]}') IS NOT NULL AS registered;
SELECT cloacina.schedule('nightly-report', 'nightly', '0 2 * * *', 'Europe/Paris') AS sid \gset
SELECT name, workflow, cron, timezone, catchup, next_run_at > now() AS in_future,
       extract(hour FROM next_run_at AT TIME ZONE 'Europe/Paris') AS local_hour
  FROM tenant_cron.schedules;
-- upsert by name: same id, new definition
SELECT cloacina.schedule('nightly-report', 'nightly', '30 3 * * *', 'UTC', '{"k": 1}', 'run_all') = :sid AS same_id;
SELECT cron, timezone, context, catchup FROM tenant_cron.schedules;
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'missing_workflow', '* * * * *')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'nightly', '* * *')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'nightly', '* * * * *', 'Mars/Olympus_Mons')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'nightly', '* * * * *', 'UTC', '[]')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('bad', 'nightly', '* * * * *', 'UTC', '{}', 'some')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('bad name', 'nightly', '* * * * *')$$);
SELECT pg_temp.try($$SELECT cloacina.schedule('never', 'nightly', '0 0 30 2 *')$$);
SELECT count(*) AS schedules FROM tenant_cron.schedules;
-- A tick that comes late (a busy scheduler) still fires the latest slot due; "skip" drops only
-- the older ones. At startup (the scheduler was not running) it fires none of them. One
-- transaction, so that now() is the same hour throughout.
BEGIN;
SELECT cloacina.schedule('hourly', 'nightly', '0 * * * *') IS NOT NULL AS scheduled;
UPDATE tenant_cron.schedules SET next_run_at = date_trunc('hour', now()) - interval '2 hours' WHERE name = 'hourly';
SELECT cloacina._fire_schedules('tenant_cron', true) AS fired_at_startup;
UPDATE tenant_cron.schedules SET next_run_at = date_trunc('hour', now()) - interval '2 hours' WHERE name = 'hourly';
SELECT cloacina._fire_schedules('tenant_cron', false) AS fired_late;
SELECT f.slot = date_trunc('hour', now()) AS latest_slot, s.next_run_at > now() AS next_in_future
  FROM tenant_cron.schedule_fires f JOIN tenant_cron.schedules s ON s.id = f.schedule_id WHERE s.name = 'hourly';
COMMIT;
SELECT cloacina.unschedule('hourly') AS removed_hourly;
-- One tick fires at most 100 slots: a tenant with many schedules due is served in parts, and
-- the scheduler serves tenants that waited longer in between.
BEGIN;
SELECT count(cloacina.schedule('many_' || g, 'nightly', '0 * * * *')) AS many_schedules FROM generate_series(1, 150) g;
UPDATE tenant_cron.schedules SET next_run_at = date_trunc('hour', now()) WHERE name LIKE 'many\_%';
SELECT cloacina._fire_schedules('tenant_cron', false) AS first_tick, cloacina._fire_schedules('tenant_cron', false) AS second_tick,
       cloacina._fire_schedules('tenant_cron', false) AS third_tick;
SELECT count(*) AS fired_once FROM tenant_cron.schedule_fires f JOIN tenant_cron.schedules s ON s.id = f.schedule_id
 WHERE s.name LIKE 'many\_%' AND f.slot = date_trunc('hour', now());
COMMIT;
SELECT count(cloacina.unschedule('many_' || g)) AS unscheduled FROM generate_series(1, 150) g;
-- A suspended tenant's schedules pause: a slot that comes due is skipped, and the tick reports
-- the next one as its due time, not the skipped one in the past (which brought the scheduler
-- back to the tenant at once, for as long as it stayed suspended).
BEGIN;
SELECT cloacina.schedule('minutely', 'nightly', '* * * * *') IS NOT NULL AS scheduled;
SELECT cloacina.suspend_tenant('tenant_cron');
UPDATE tenant_cron.schedules SET next_run_at = now() - interval '1 minute' WHERE name = 'minutely';
SELECT cloacina._fire_schedules('tenant_cron', false) AS fired_while_suspended;
SELECT next_run_at > now() AS next_slot_ahead,
       (SELECT count(*) FROM tenant_cron.schedule_fires WHERE schedule_id = s.id) AS fires
  FROM tenant_cron.schedules s WHERE name = 'minutely';
UPDATE tenant_cron.schedules SET next_run_at = now() - interval '1 minute' WHERE name = 'minutely';
SELECT next_due > now() AS tick_due_ahead FROM cloacina._tenant_tick('tenant_cron', false, NULL);
SELECT cloacina.resume_tenant('tenant_cron');
COMMIT;
SELECT cloacina.unschedule('minutely') AS removed_minutely;
SELECT cloacina.unschedule('nightly-report') AS removed, cloacina.unschedule('nightly-report') AS removed_again;
RESET search_path;
SELECT cloacina.remove_tenant('tenant_cron', cancel_unfinished => true);
