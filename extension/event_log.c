/*
 * event_log.c: the server log lines of what the background workers do to a tenant's work on
 * their own (a lease or timeout ends an attempt, a run times out, a SQL task fails, a schedule
 * fires or skips a slot), at the level cloacina.event_log_level sets ("off": none). A tenant
 * reads the same history in its execution_events; the operator reads it here.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_log_event_fn);

int			cloacina_event_log_level = LOG;

static const struct config_enum_entry event_log_levels[] = {
	{"debug2", DEBUG2, false},
	{"debug1", DEBUG1, false},
	{"log", LOG, false},
	{"info", INFO, false},
	{"notice", NOTICE, false},
	{"warning", WARNING, false},
	{"off", CLOACINA_EVENT_LOG_OFF, false},
	{NULL, 0, false}
};

void
cloacina_define_event_log_level(void)
{
	DefineCustomEnumVariable("cloacina.event_log_level",
							 "Level of the server log lines for the background workers' events.",
							 "Abandoned and timed-out attempts, run timeouts, failed SQL tasks, "
							 "schedule fires and skipped slots; off writes none.",
							 &cloacina_event_log_level, LOG, event_log_levels,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

/* One line about tenant "schema"; no statement or context lines with it. */
void
cloacina_log_event(const char *schema, const char *message)
{
	if (cloacina_event_log_level == CLOACINA_EVENT_LOG_OFF)
		return;
	ereport(cloacina_event_log_level,
			(errmsg("cloacina: tenant \"%s\": %s", schema, message),
			 errhidestmt(true), errhidecontext(true)));
}

/* cloacina._log_event(schema, message) */
Datum
cloacina_log_event_fn(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
		cloacina_log_event(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}
