/*
 * unit.c: one unit of background work, as the scheduler and the SQL-task pool do it: a
 * transaction of its own with SPI and a snapshot, shown in pg_stat_activity while it runs; and
 * the recovery after a unit failed (report the error, abort, carry on with the next unit).
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "cloacina.h"

void
cloacina_unit_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
cloacina_unit_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* In a PG_CATCH around one unit: log the error and abort the unit's transaction. */
void
cloacina_unit_recover(MemoryContext scratch)
{
	MemoryContextSwitchTo(scratch);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
}
