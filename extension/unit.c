/*
 * unit.c: one unit of background work, as the scheduler and the SQL-task pool do it: a
 * transaction of its own with SPI and a snapshot, shown in pg_stat_activity while it runs; and
 * the recovery after a unit failed (report the error, abort, carry on with the next unit).
 *
 * Every wait of a unit is bounded, since a tenant controls the locks on its own tables: a lock
 * waits at most cloacina.worker_lock_timeout, a unit runs at most
 * cloacina.worker_statement_timeout. A tenant cannot change either for the workers' sessions.
 *
 * A unit that runs tenant statements from C, outside any SQL function (the SQL-task pool's claim,
 * its task's SQL and the outcome), is a transaction block, as a client's BEGIN opens. On
 * PostgreSQL that changes nothing; Citus runs the statements of a transaction in one remote
 * transaction on the tenant's node only inside a block or a function: outside both, each of them
 * committed on the node on its own (a claim before the worker's slot named its task, a task's SQL
 * apart from its outcome). The scheduler's units call SQL functions, which Citus already treats
 * as a block, and are not blocks: a block would also keep its reads' locks on the tenant's shards
 * until the unit ends, which a citus_schema_move waits for.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "cloacina.h"

/* The background workers' session settings: at start and after each reload of the settings. */
void
cloacina_unit_settings(void)
{
	(void) set_config_option("lock_timeout", psprintf("%d", cloacina_worker_lock_timeout_ms),
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET, true, 0, false);
}

/*
 * Bounds what is left of the unit by cloacina.worker_statement_timeout (the client protocol
 * loop that arms statement_timeout for a backend does not run in a background worker).
 */
void
cloacina_unit_arm_timeout(void)
{
	enable_timeout_after(STATEMENT_TIMEOUT, cloacina_worker_statement_timeout_ms);
}

static void
unit_begin(const char *activity, bool block)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (block)
	{
		BeginTransactionBlock();
		CommitTransactionCommand(); /* the block is open (in progress) */
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	cloacina_unit_arm_timeout();
}

/* A unit whose statements run inside SQL functions. */
void
cloacina_unit_begin(const char *activity)
{
	unit_begin(activity, false);
}

/* A unit that runs tenant statements from C: a transaction block. */
void
cloacina_unit_begin_block(const char *activity)
{
	unit_begin(activity, true);
}

void
cloacina_unit_commit(void)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	SPI_finish();
	PopActiveSnapshot();
	if (IsTransactionBlock())
		(void) EndTransactionBlock(false);
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Ends the unit's transaction with a rollback, on purpose (no error to report). */
void
cloacina_unit_abandon(void)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	SPI_finish();
	PopActiveSnapshot();
	AbortOutOfAnyTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* In a PG_CATCH around one unit: log the error and abort the unit's transaction. */
void
cloacina_unit_recover(MemoryContext scratch)
{
	disable_timeout(STATEMENT_TIMEOUT, false);
	MemoryContextSwitchTo(scratch);
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
}
