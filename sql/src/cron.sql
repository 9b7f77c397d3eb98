-- sql/src/cron.sql: cron schedules: parsing, next slots, schedule/unschedule, firing.

------------------------------------------------------------------------------------------------
-- 7. Cron schedules
------------------------------------------------------------------------------------------------

-- Parses one cron field into its sorted list of allowed values. Items are separated by commas;
-- each is *, a value, a range a-b, optionally followed by /step (a value with a step runs to
-- the field's maximum). Month and weekday fields also take names (JAN, MON, ...).
CREATE FUNCTION cloacina._cron_field(field text, what text, lo int, hi int, names text[] DEFAULT NULL)
RETURNS int[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    item text;
    m text[];
    a int;
    b int;
    step int;
    vals int[] := '{}';
    token text;
    n int;
BEGIN
    IF field IS NULL OR field = '' THEN
        RAISE EXCEPTION 'cron % field is empty', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- names to numbers (JAN -> 1 for months, SUN -> 0 for weekdays)
    IF names IS NOT NULL THEN
        FOR i IN 1 .. cardinality(names) LOOP
            field := regexp_replace(field, '(?i)\m' || names[i] || '\M', (i - 1 + lo)::text, 'g');
        END LOOP;
    END IF;
    FOREACH item IN ARRAY string_to_array(field, ',') LOOP
        m := regexp_match(item, '^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$');
        IF m IS NULL THEN
            RAISE EXCEPTION 'invalid cron % field "%"', what, field
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use *, a number, a range a-b, a list a,b and steps */n or a-b/n.';
        END IF;
        IF m[1] = '*' THEN
            IF m[2] IS NOT NULL THEN
                RAISE EXCEPTION 'invalid cron % field "%"', what, field USING ERRCODE = 'invalid_parameter_value';
            END IF;
            a := lo;
            b := hi;
        ELSE
            a := m[1]::int;
            b := coalesce(m[2]::int, CASE WHEN m[3] IS NOT NULL THEN hi ELSE a END);
        END IF;
        step := coalesce(m[3]::int, 1);
        IF a < lo OR b > hi OR a > b OR step < 1 THEN
            RAISE EXCEPTION 'cron % field "%" is out of range %-%', what, field, lo, hi
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        n := a;
        WHILE n <= b LOOP
            vals := vals || n;
            n := n + step;
        END LOOP;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(vals) v ORDER BY v);
END
$$;

-- The expression an @ macro stands for (pg_cron's and Vixie cron's set, less @reboot).
CREATE FUNCTION cloacina._cron_macro(macro text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE lower(macro)
    WHEN '@yearly', '@annually' THEN RETURN '0 0 1 1 *';
    WHEN '@monthly' THEN RETURN '0 0 1 * *';
    WHEN '@weekly' THEN RETURN '0 0 * * 0';
    WHEN '@daily', '@midnight' THEN RETURN '0 0 * * *';
    WHEN '@hourly' THEN RETURN '0 * * * *';
    ELSE
        RAISE EXCEPTION 'unknown cron macro "%"', macro
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly.';
    END CASE;
END
$$;

-- Parses a 5-field (minute hour day month weekday) or 6-field (second first) expression of at
-- most max_length characters (a real one needs a few dozen; parsing costs grow with the length),
-- or an @ macro.
CREATE FUNCTION cloacina._cron_parse(expr text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    max_length constant int := 256;
    f text[];
BEGIN
    IF length(expr) > max_length THEN
        RAISE EXCEPTION 'cron expression is too long (% characters, the limit is %)', length(expr), max_length
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF btrim(expr) LIKE '@%' THEN
        expr := cloacina._cron_macro(btrim(expr));
    END IF;
    f := regexp_split_to_array(btrim(coalesce(expr, '')), '\s+');
    IF cardinality(f) = 5 THEN
        f := ARRAY['0'] || f;
    ELSIF cardinality(f) <> 6 THEN
        RAISE EXCEPTION 'cron expression "%" must have 5 or 6 fields', coalesce(expr, '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '[second] minute hour day-of-month month day-of-week, for example "*/5 * * * *".';
    END IF;
    RETURN jsonb_build_object(
        'second', cloacina._cron_field(f[1], 'second', 0, 59),
        'minute', cloacina._cron_field(f[2], 'minute', 0, 59),
        'hour', cloacina._cron_field(f[3], 'hour', 0, 23),
        'day', cloacina._cron_field(f[4], 'day-of-month', 1, 31),
        'month', cloacina._cron_field(f[5], 'month', 1, 12,
                    ARRAY['jan','feb','mar','apr','may','jun','jul','aug','sep','oct','nov','dec']),
        -- weekday 7 is Sunday, like 0
        'weekday', ARRAY(SELECT DISTINCT v % 7 FROM unnest(cloacina._cron_field(f[6], 'weekday', 0, 7,
                    ARRAY['sun','mon','tue','wed','thu','fri','sat'])) v ORDER BY 1),
        'day_restricted', f[4] <> '*',
        'weekday_restricted', f[6] <> '*');
END
$$;

-- The first slot of a parsed expression strictly after "after", in time zone "tz". Slots are
-- found in local time, so "0 9 * * *" stays at 09:00 across daylight-saving changes; a local
-- time that does not exist (spring forward) fires when the gap ends; a repeated local time
-- (fall back) fires once.
CREATE FUNCTION cloacina._cron_next(spec jsonb, tz text, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secs    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'second')::int);
    mins    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'minute')::int);
    hours   int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'hour')::int);
    days    int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'day')::int);
    months  int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'month')::int);
    wdays   int[] := ARRAY(SELECT jsonb_array_elements_text(spec -> 'weekday')::int);
    day_r   boolean := (spec ->> 'day_restricted')::boolean;
    wday_r  boolean := (spec ->> 'weekday_restricted')::boolean;
    t       timestamp := date_trunc('second', after AT TIME ZONE tz) + interval '1 second';
    limit_t timestamp := t + interval '5 years';
    day_ok  boolean;
    nxt     int;
    candidate timestamptz;
BEGIN
    WHILE t < limit_t LOOP
        IF NOT extract(month FROM t)::int = ANY (months) THEN
            t := date_trunc('month', t) + interval '1 month';
            CONTINUE;
        END IF;
        day_ok := CASE WHEN day_r AND wday_r THEN extract(day FROM t)::int = ANY (days) OR extract(dow FROM t)::int = ANY (wdays)
                       ELSE extract(day FROM t)::int = ANY (days) AND extract(dow FROM t)::int = ANY (wdays) END;
        IF NOT day_ok THEN
            t := date_trunc('day', t) + interval '1 day';
            CONTINUE;
        END IF;
        IF NOT extract(hour FROM t)::int = ANY (hours) THEN
            t := date_trunc('hour', t) + interval '1 hour';
            CONTINUE;
        END IF;
        IF NOT extract(minute FROM t)::int = ANY (mins) THEN
            t := date_trunc('minute', t) + interval '1 minute';
            CONTINUE;
        END IF;
        SELECT min(v) INTO nxt FROM unnest(secs) v WHERE v >= extract(second FROM t)::int;
        IF nxt IS NULL THEN
            t := date_trunc('minute', t) + interval '1 minute';
            CONTINUE;
        END IF;
        t := date_trunc('minute', t) + make_interval(secs => nxt);
        candidate := t AT TIME ZONE tz;
        IF candidate > after THEN
            RETURN candidate;
        END IF;
        t := t + interval '1 second';
    END LOOP;
    RETURN NULL;  -- no slot within five years (for example 30 February)
END
$$;

-- Creates or replaces a schedule by name. A replaced schedule keeps its pause: a paused one
-- stays paused (next_run_at infinity) with its new definition.
CREATE FUNCTION cloacina._schedule(s text, name text, workflow text, cron text, timezone text,
                                   context jsonb, catchup text, overlap text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    spec jsonb;
    first_slot timestamptz;
    exists_wf boolean;
    sid bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'scheduling');
    IF name IS NULL OR name !~ '^[A-Za-z][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid schedule name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'Schedule names start with a letter and contain letters, digits, "_", "." and "-" (at most 63).';
    END IF;
    EXECUTE format('SELECT true FROM %I.workflows WHERE name = $1', s) INTO exists_wf USING workflow;
    IF exists_wf IS NULL THEN
        RAISE EXCEPTION 'workflow "%" is not registered in tenant "%"', workflow, s
            USING ERRCODE = 'undefined_object', HINT = 'Register it with cloacina.register_workflow().';
    END IF;
    context := coalesce(context, '{}'::jsonb);
    IF jsonb_typeof(context) <> 'object' THEN
        RAISE EXCEPTION 'context must be a JSON object (got %)', jsonb_typeof(context) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM cloacina._check_context(context, 'the schedule''s context');
    IF catchup IS NULL OR catchup NOT IN ('skip', 'run_all') THEN
        RAISE EXCEPTION 'catchup must be skip or run_all (got %)', coalesce(quote_literal(catchup), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE timezone;
    EXCEPTION WHEN invalid_parameter_value OR null_value_not_allowed THEN
        RAISE EXCEPTION 'unknown time zone %', coalesce(quote_literal(timezone), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use an IANA name such as Europe/Paris, or UTC.';
    END;
    IF overlap IS NULL OR overlap NOT IN ('allow', 'skip') THEN
        RAISE EXCEPTION 'overlap must be allow or skip (got %)', coalesce(quote_literal(overlap), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'skip: a slot does not fire while the schedule''s previous run is unfinished.';
    END IF;
    IF timezone IS NULL THEN
        RAISE EXCEPTION 'unknown time zone NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    spec := cloacina._cron_parse(cron);
    first_slot := cloacina._cron_next(spec, timezone, now());
    IF first_slot IS NULL THEN
        RAISE EXCEPTION 'cron expression "%" never fires', cron USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format($q$
        INSERT INTO %I.schedules AS sc (name, workflow, cron, spec, timezone, context, catchup, overlap, next_run_at)
        VALUES ($1, $2, $3, $8, $4, $5, $6, $9, $7)
        ON CONFLICT (name) DO UPDATE
            SET workflow = excluded.workflow, cron = excluded.cron, spec = excluded.spec,
                timezone = excluded.timezone, context = excluded.context, catchup = excluded.catchup,
                overlap = excluded.overlap,
                next_run_at = CASE WHEN sc.paused THEN 'infinity' ELSE excluded.next_run_at END,
                updated_at = $10
        RETURNING id$q$, s)
        INTO sid USING name, workflow, btrim(cron), timezone, context, catchup, first_slot, spec, overlap, now();
    PERFORM cloacina._due(s, first_slot);
    RETURN sid;
END
$$;

CREATE FUNCTION cloacina._unschedule(s text, name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM cloacina._require_tenant(s);
    EXECUTE format('DELETE FROM %I.schedules WHERE name = $1 RETURNING id', s) INTO removed USING name;
    RETURN removed IS NOT NULL;
END
$$;

-- Pauses (next_run_at infinity: nothing fires, the worker's tick does not look at it) or
-- resumes (the next slot after now: what was missed while paused does not fire) a schedule.
-- Returns false if it already was in that state.
CREATE FUNCTION cloacina._set_schedule_paused(s text, name text, pause boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sc record;
    next_slot timestamptz;
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'pausing a schedule');
    EXECUTE format('SELECT id, paused, spec, timezone FROM %I.schedules WHERE name = $1 FOR UPDATE', s)
        INTO sc USING name;
    IF sc.id IS NULL THEN
        RAISE EXCEPTION 'schedule % does not exist in tenant "%"', coalesce(quote_literal(name), 'NULL'), s
            USING ERRCODE = 'undefined_object';
    END IF;
    IF sc.paused = pause THEN
        RETURN false;
    END IF;
    next_slot := CASE WHEN pause THEN 'infinity' ELSE cloacina._cron_next(sc.spec, sc.timezone, now()) END;
    EXECUTE format('UPDATE %I.schedules SET paused = $2, next_run_at = $3, updated_at = now() WHERE id = $1', s)
        USING sc.id, pause, coalesce(next_slot, 'infinity');
    IF NOT pause AND next_slot IS NOT NULL THEN
        PERFORM cloacina._due(s, next_slot);
    END IF;
    RETURN true;
END
$$;

-- Fires the due slots of one tenant's schedules: each fire records (schedule, slot), starts the
-- run and advances next_run_at in the caller's transaction; the unique key makes a slot fire at
-- most once. Slots missed while the scheduler was not running ("startup") or by more than five
-- seconds are catch-up slots: "skip" drops them (the next future slot fires), "run_all" fires
-- each of them once, at most max_catchup per schedule. Except at startup, the latest slot due
-- fires however late the tick (a busy scheduler reaches thousands of tenants due at the same
-- second one after the other: "skip" drops backlogs, not the slot that is due now). With
-- overlap "skip", a slot whose schedule's previous run is unfinished does not fire. Except at
-- startup, one call looks at per_tick schedules at most and stops once it fired per_tick slots:
-- the schedules left are still due, so the scheduler comes back to them after the tenants that
-- waited longer (a tenant with thousands of schedules cannot hold the scheduler for long). A
-- suspended tenant fires nothing. Each fire and skip is logged at cloacina.event_log_level.
CREATE FUNCTION cloacina._fire_schedules(s text, startup boolean, max_catchup int DEFAULT 100) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    grace constant interval := interval '5 seconds';
    per_tick constant int := 100;
    sc record;
    slot timestamptz;
    next_slot timestamptz;
    fired int := 0;
    n int;
    eid bigint;
    inserted boolean;
    st text;
    busy_run bigint;
BEGIN
    EXECUTE format('SELECT state FROM %I.tenant_settings', s) INTO st;
    FOR sc IN EXECUTE format('SELECT * FROM %I.schedules WHERE next_run_at <= now() ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED', s)
              USING CASE WHEN NOT startup THEN per_tick END LOOP
        EXIT WHEN NOT startup AND fired >= per_tick;
        slot := sc.next_run_at;
        n := 0;
        -- Suspended: its schedules pause, and the slots due are skipped (below, the schedule
        -- moves on to its next slot from now). Left due, the past slot would be the tick's next
        -- due time and the tenant ticked again at once for as long as it stays suspended.
        WHILE st = 'active' AND slot IS NOT NULL AND slot <= now() AND n < max_catchup LOOP
            next_slot := cloacina._cron_next(sc.spec, sc.timezone, slot);
            busy_run := NULL;
            IF to_jsonb(sc) ->> 'overlap' = 'skip' THEN  -- (no such column before layout 2)
                EXECUTE format($q$SELECT e.id FROM (SELECT execution_id FROM %1$I.schedule_fires
                                                     WHERE schedule_id = $1 ORDER BY slot DESC LIMIT 1) f
                                    JOIN %1$I.executions e ON e.id = f.execution_id
                                   WHERE e.status IN ('running', 'paused')$q$, s)
                    INTO busy_run USING sc.id;
            END IF;
            IF busy_run IS NOT NULL THEN
                PERFORM cloacina._log_event(s, format('schedule %s skipped slot %s: its run %s is unfinished',
                                                      quote_literal(sc.name), slot, busy_run));
            ELSIF sc.catchup = 'run_all'
                  OR NOT startup AND (now() - slot <= grace OR next_slot IS NULL OR next_slot > now()) THEN
                EXECUTE format('INSERT INTO %I.schedule_fires (schedule_id, slot, execution_id) VALUES ($1, $2, 0) '
                               'ON CONFLICT DO NOTHING RETURNING true', s) INTO inserted USING sc.id, slot;
                IF inserted THEN
                    eid := cloacina._execute(s, sc.workflow,
                        sc.context || jsonb_build_object('scheduled_at', slot, 'schedule', sc.name), '{}');
                    EXECUTE format('UPDATE %I.schedule_fires SET execution_id = $3 WHERE schedule_id = $1 AND slot = $2', s)
                        USING sc.id, slot, eid;
                    PERFORM cloacina._log_event(s, format('schedule %s fired slot %s: run %s of workflow %s',
                                                          quote_literal(sc.name), slot, eid, quote_literal(sc.workflow)));
                    fired := fired + 1;
                    n := n + 1;
                END IF;
            END IF;
            slot := next_slot;
        END LOOP;
        IF slot IS NOT NULL AND slot <= now() THEN
            -- run_all hit its cap, or the tenant is suspended: the rest of the backlog is
            -- dropped, continue from now
            slot := cloacina._cron_next(sc.spec, sc.timezone, now());
        END IF;
        EXECUTE format('UPDATE %I.schedules SET next_run_at = $2 WHERE id = $1', s)
            USING sc.id, coalesce(slot, 'infinity');
    END LOOP;
    RETURN fired;
END
$$;

CREATE FUNCTION cloacina.schedule(name text, workflow text, cron text, timezone text DEFAULT 'UTC',
                                  context jsonb DEFAULT '{}', catchup text DEFAULT 'skip',
                                  overlap text DEFAULT 'allow') RETURNS bigint
LANGUAGE sql AS $$
    SELECT cloacina._schedule(pg_catalog.current_schema(), name, workflow, cron, timezone, context, catchup, overlap)
$$;
COMMENT ON FUNCTION cloacina.schedule(text, text, text, text, jsonb, text, text) IS
    'Creates or replaces (by name) a cron schedule that starts a workflow; 5 or 6 fields or an @ macro, IANA time zone, catchup skip or run_all, overlap allow or skip';

CREATE FUNCTION cloacina.pause_schedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._set_schedule_paused(pg_catalog.current_schema(), name, true) $$;
COMMENT ON FUNCTION cloacina.pause_schedule(text) IS
    'Pauses a schedule: no slot fires until resume_schedule; false if it was paused already';

CREATE FUNCTION cloacina.resume_schedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._set_schedule_paused(pg_catalog.current_schema(), name, false) $$;
COMMENT ON FUNCTION cloacina.resume_schedule(text) IS
    'Resumes a paused schedule from its next slot after now (missed slots do not fire); false if it was not paused';

-- The schedules of tenant s with their next fire and the outcome of their last run.
CREATE FUNCTION cloacina._list_schedules(s text)
RETURNS TABLE(name text, workflow text, cron text, timezone text, catchup text, overlap text,
              paused boolean, next_run_at timestamptz, last_slot timestamptz, last_execution_id bigint,
              last_status text, last_finished_at timestamptz, context jsonb,
              created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM cloacina._require_tenant(s);
    PERFORM cloacina._require_layout(s, 2, 'listing schedules');
    RETURN QUERY EXECUTE format($q$
        SELECT sc.name, sc.workflow, sc.cron, sc.timezone, sc.catchup, sc.overlap, sc.paused,
               CASE WHEN sc.paused OR sc.next_run_at = 'infinity' THEN NULL ELSE sc.next_run_at END,
               f.slot, f.execution_id, e.status, e.finished_at, sc.context, sc.created_at, sc.updated_at
          FROM %1$I.schedules sc
          LEFT JOIN LATERAL (SELECT slot, execution_id FROM %1$I.schedule_fires
                              WHERE schedule_id = sc.id ORDER BY slot DESC LIMIT 1) f ON true
          LEFT JOIN %1$I.executions e ON e.id = f.execution_id
         ORDER BY sc.name$q$, s);
END
$$;

CREATE VIEW cloacina.schedules WITH (security_invoker = true) AS
    SELECT * FROM cloacina._list_schedules(pg_catalog.current_schema());
COMMENT ON VIEW cloacina.schedules IS
    'The current tenant''s schedules: next fire time (NULL while paused) and the last run''s outcome';
GRANT SELECT ON cloacina.schedules TO PUBLIC;

CREATE FUNCTION cloacina.unschedule(name text) RETURNS boolean
LANGUAGE sql AS $$ SELECT cloacina._unschedule(pg_catalog.current_schema(), name) $$;
COMMENT ON FUNCTION cloacina.unschedule(text) IS 'Removes a schedule; false if there was none of that name';
