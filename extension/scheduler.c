/*
 * scheduler.c: the background workers' registration and the scheduler's main loop.
 *
 * The scheduler connects to cloacina.database and, for each tenant with something due (see
 * due.c), runs cloacina._tenant_tick() in a transaction of its own: expired leases and timeouts,
 * due cron slots, wake-up hints for retries, retention. At start it looks at every tenant once
 * (the "startup" pass, in which overdue cron slots count as missed). After an update that changed
 * the tenants' tables, it also migrates a batch of tenants every naptime, one per transaction.
 * It also ends the sessions of tenant roles whose transaction stays open past
 * cloacina.tenant_transaction_timeout (transaction_guard.c). Between passes it sleeps on its
 * latch until the next due time, at most cloacina.naptime. One tenant's error is logged and does
 * not stop the others; every wait on a tenant's locks is bounded (unit.c), and a tenant whose
 * tick fails is looked at again with backoff.
 *
 * On a worker node of a Citus cluster the scheduler serves no tenant: it relays what this node's
 * backends push to the coordinator's scheduler (relay.c).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "cloacina.h"

PGDLLEXPORT void cloacina_scheduler_main(Datum main_arg);
PGDLLEXPORT void cloacina_sql_worker_main(Datum main_arg);

/* tenants handled per round before due times are looked at again */
#define TICK_BATCH 256
/* how soon a tenant with ready SQL tasks is looked at again */
#define SQL_READY_RECHECK_MS 2000
/* tenants migrated per pass, each in a transaction of its own, before due work comes again */
#define MIGRATE_BATCH 100
/* a relaying scheduler's shortest pause between passes: each pass opens a connection */
#define RELAY_MIN_INTERVAL_MS 100

void
cloacina_register_workers(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "cloacina", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "cloacina_scheduler_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "cloacina scheduler", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "cloacina scheduler", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);

	for (int i = 0; i < cloacina_sql_workers; i++)
	{
		strlcpy(worker.bgw_function_name, "cloacina_sql_worker_main", BGW_MAXLEN);
		snprintf(worker.bgw_name, BGW_MAXLEN, "cloacina sql worker %d", i);
		strlcpy(worker.bgw_type, "cloacina sql worker", BGW_MAXLEN);
		worker.bgw_main_arg = Int32GetDatum(i);
		RegisterBackgroundWorker(&worker);
	}
}

/* Whether the extension is installed in this database (it may be created after we start). */
static bool
extension_installed(void)
{
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	installed = OidIsValid(get_extension_oid("cloacina", true));
	PopActiveSnapshot();
	CommitTransactionCommand();
	return installed;
}

/* Runs _tenant_tick for one tenant in its own transaction and records what it reports. */
static void
tick_tenant(const char *schema, bool startup)
{
	Oid			argtypes[3] = {TEXTOID, BOOLOID, INTERVALOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	TimestampTz next_due = DT_NOEND;
	bool		sql_ready = false;
	int			max_running = 0;
	int			weight = 1;
	bool		exists;

	cloacina_unit_begin(psprintf("cloacina: tenant %s", schema));

	args[0] = CStringGetTextDatum(schema);
	args[1] = BoolGetDatum(startup);
	if (cloacina_retention_s > 0)
		args[2] = DirectFunctionCall7(make_interval, Int32GetDatum(0), Int32GetDatum(0),
									  Int32GetDatum(0), Int32GetDatum(0), Int32GetDatum(0),
									  Int32GetDatum(0), Float8GetDatum((double) cloacina_retention_s));
	else
		nulls[2] = 'n';

	if (SPI_execute_with_args("SELECT * FROM cloacina._tenant_tick($1, $2, $3)", 3, argtypes,
							  args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "cloacina._tenant_tick failed for tenant %s", schema);
	exists = SPI_processed > 0;
	if (exists)
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		d = SPI_getbinval(row, desc, 1, &isnull);
		if (!isnull)
			next_due = DatumGetTimestampTz(d);
		d = SPI_getbinval(row, desc, 2, &isnull);
		sql_ready = !isnull && DatumGetBool(d);
		d = SPI_getbinval(row, desc, 3, &isnull);
		max_running = isnull ? 0 : DatumGetInt32(d);
		d = SPI_getbinval(row, desc, 4, &isnull);
		weight = isnull ? 1 : DatumGetInt32(d);
	}

	cloacina_unit_commit();

	/*
	 * Ready SQL tasks are announced to the pool by the commits that make them
	 * ready; while some wait, look again soon, so that even a lost
	 * announcement delays them by seconds at most.
	 */
	if (sql_ready)
		next_due = Min(next_due, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SQL_READY_RECHECK_MS));
	if (exists)
		cloacina_due_after_tick(schema, next_due, sql_ready, max_running, weight);
	else
		cloacina_due_forget(schema);
}

/*
 * Ticks one tenant; an error is logged, the tenant is looked at again after a backoff, and the
 * loop goes on (one tenant's broken state or locked tables must not stop the others).
 */
static void
tick_tenant_guarded(const char *schema, bool startup, MemoryContext scratch)
{
	MemoryContext old = MemoryContextSwitchTo(scratch);

	PG_TRY();
	{
		tick_tenant(schema, startup);
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
		cloacina_due_after_failed_tick(schema);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
}

/* The startup pass (and the fallback after an overflow of the due table): every tenant once. */
static void
tick_all_tenants(bool startup, MemoryContext scratch)
{
	List	   *schemas = NIL;
	ListCell   *lc;
	MemoryContext old;

	cloacina_unit_begin("cloacina: listing tenants");
	if (SPI_execute("SELECT cloacina._tenant_schemas()", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the tenants");
	old = MemoryContextSwitchTo(TopMemoryContext);
	for (uint64 i = 0; i < SPI_processed; i++)
		schemas = lappend(schemas, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	MemoryContextSwitchTo(old);
	cloacina_unit_commit();

	foreach(lc, schemas)
	{
		CHECK_FOR_INTERRUPTS();
		tick_tenant_guarded((char *) lfirst(lc), startup, scratch);
	}
	list_free_deep(schemas);
}

/* The next tenants to migrate to the current table layout (none before 0.2.0 is installed). */
static List *
tenants_to_migrate(void)
{
	List	   *schemas = NIL;
	MemoryContext old;

	cloacina_unit_begin("cloacina: looking for tenants to migrate");
	if (SPI_execute("SELECT to_regprocedure('cloacina._tenants_to_migrate(integer)') IS NOT NULL",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for tenant migrations");
	if (strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0)
	{
		if (SPI_execute(psprintf("SELECT cloacina._tenants_to_migrate(%d)", MIGRATE_BATCH), true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the tenants to migrate");
		old = MemoryContextSwitchTo(TopMemoryContext);
		for (uint64 i = 0; i < SPI_processed; i++)
			schemas = lappend(schemas, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		MemoryContextSwitchTo(old);
	}
	cloacina_unit_commit();
	return schemas;
}

/* Migrates one tenant in its own transaction; false (the error logged) if that failed. */
static bool
migrate_tenant_guarded(const char *schema, MemoryContext scratch)
{
	MemoryContext old = MemoryContextSwitchTo(scratch);
	volatile bool migrated = false;

	PG_TRY();
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		args[1] = {CStringGetTextDatum(schema)};

		cloacina_unit_begin(psprintf("cloacina: migrating tenant %s", schema));
		if (SPI_execute_with_args("SELECT cloacina._migrate_tenant($1)", 1, argtypes, args, NULL,
								  false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not migrate tenant %s", schema);
		cloacina_unit_commit();
		migrated = true;
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
	return migrated;
}

/*
 * After an update that changed the tenants' tables: migrates a batch of tenants, one per
 * transaction (sql/src/migrations.sql). A tenant whose migration fails (its tables stayed locked
 * past cloacina.worker_lock_timeout) is tried again at the next pass.
 */
static void
migrate_some_tenants(MemoryContext scratch)
{
	List	   *schemas = tenants_to_migrate();
	ListCell   *lc;
	int			migrated = 0;

	foreach(lc, schemas)
	{
		CHECK_FOR_INTERRUPTS();
		if (migrate_tenant_guarded((char *) lfirst(lc), scratch))
			migrated++;
	}
	if (migrated > 0)
		ereport(LOG, (errmsg("cloacina: migrated %d tenants to the current table layout", migrated)));
	list_free_deep(schemas);
}

/* Ends tenant transactions open past their limit; returns when to look again (transaction_guard.c). */
static TimestampTz
guard_tenant_transactions(TimestampTz latest, MemoryContext scratch)
{
	MemoryContext old = MemoryContextSwitchTo(scratch);
	volatile TimestampTz next = latest;

	PG_TRY();
	{
		next = cloacina_end_long_tenant_transactions(latest);
	}
	PG_CATCH();
	{
		cloacina_unit_recover(scratch);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch);
	return next;
}

/* Whether this node relays (a Citus worker node); a node that stops relaying serves everyone. */
static bool
update_relaying(bool relaying, MemoryContext scratch)
{
	bool		relay = cloacina_relay_node(relaying, scratch);

	cloacina_due_set_relay(relay);
	if (relaying && !relay)
		tick_all_tenants(true, scratch);
	return relay;
}

/*
 * A relaying scheduler's pass, unless a failed one set a later retry; returns when to try next
 * (0: at the next wake-up).
 */
static TimestampTz
relay_step(TimestampTz retry_at, MemoryContext scratch)
{
	TimestampTz now = GetCurrentTimestamp();

	if (cloacina_due_take_overflow())
		ereport(WARNING,
				(errmsg("cloacina: more tenants than cloacina.max_tenants (%d)", cloacina_max_tenants),
				 errhint("Raise cloacina.max_tenants; until then some due times pushed on this node are lost.")));
	if (now < retry_at)
		return retry_at;
	return cloacina_relay_pass(scratch) ? 0 : TimestampTzPlusMilliseconds(now, cloacina_naptime_ms);
}

/*
 * Every push wakes a relaying scheduler: it pauses RELAY_MIN_INTERVAL_MS after each pass, so that
 * pushes gather, then sleeps until a push wakes it, the retry, or a naptime. Returns the latter.
 */
static TimestampTz
relay_pause(TimestampTz now, TimestampTz retry_at)
{
	(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, RELAY_MIN_INTERVAL_MS, PG_WAIT_EXTENSION);
	CHECK_FOR_INTERRUPTS();
	return retry_at > now ? retry_at : TimestampTzPlusMilliseconds(now, cloacina_naptime_ms);
}

void
cloacina_scheduler_main(Datum main_arg)
{
	MemoryContext scratch;
	bool		started = false;
	bool		relaying = false;
	TimestampTz relay_retry_at = 0;
	char		(*due)[NAMEDATALEN];
	TimestampTz next_migration_pass = 0;
	TimestampTz next_transaction_guard = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(cloacina_database, NULL, 0);
	pgstat_report_appname("cloacina scheduler");
	cloacina_unit_settings();

	scratch = AllocSetContextCreate(TopMemoryContext, "cloacina scheduler", ALLOCSET_DEFAULT_SIZES);
	due = MemoryContextAlloc(TopMemoryContext, sizeof(*due) * TICK_BATCH);
	cloacina_due_set_scheduler_latch();
	ereport(LOG, (errmsg("cloacina scheduler started for database \"%s\"", cloacina_database)));

	for (;;)
	{
		TimestampTz now;
		TimestampTz next;
		long		sleep_ms;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			cloacina_unit_settings();
			ereport(LOG,
					(errmsg("cloacina scheduler reloaded its settings: naptime %d ms, retention %d s",
							cloacina_naptime_ms, cloacina_retention_s)));
			next_transaction_guard = 0; /* the limit may have changed */
			/* due times depend on the retention: look at every tenant again */
			if (started && !relaying)
				tick_all_tenants(false, scratch);
		}

		if (!started)
		{
			if (extension_installed())
			{
				relaying = update_relaying(false, scratch);
				if (relaying)
					ereport(LOG, (errmsg("cloacina scheduler relays to the Citus coordinator")));
				else
					tick_all_tenants(true, scratch);
				started = true;
			}
		}
		else if (relaying)
			relay_retry_at = relay_step(relay_retry_at, scratch);
		else
		{
			if (cloacina_due_take_overflow())
			{
				ereport(WARNING,
						(errmsg("cloacina: more tenants than cloacina.max_tenants (%d)", cloacina_max_tenants),
						 errhint("Raise cloacina.max_tenants; until then every tenant is looked at each naptime.")));
				tick_all_tenants(false, scratch);
			}
			do
			{
				n = cloacina_due_take(GetCurrentTimestamp(), due, TICK_BATCH);
				for (int i = 0; i < n; i++)
				{
					CHECK_FOR_INTERRUPTS();
					tick_tenant_guarded(due[i], false, scratch);
				}
			} while (n == TICK_BATCH);
		}

		now = GetCurrentTimestamp();
		if (started && now >= next_migration_pass)
		{
			relaying = update_relaying(relaying, scratch);
			if (!relaying)
				migrate_some_tenants(scratch);
			next_migration_pass = TimestampTzPlusMilliseconds(now, cloacina_naptime_ms);
		}
		if (started && !relaying && now >= next_transaction_guard)
			next_transaction_guard =
				guard_tenant_transactions(TimestampTzPlusMilliseconds(now, cloacina_naptime_ms), scratch);
		if (relaying)
			next = relay_pause(now, relay_retry_at);
		else
			next = Min(cloacina_due_next_wakeup(now, TimestampTzPlusMilliseconds(now, cloacina_naptime_ms)),
					   next_transaction_guard);
		sleep_ms = (next <= now) ? 0 : (long) ((next - now + 999) / 1000);
		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
