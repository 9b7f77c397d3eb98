/*
 * cloacina.h: declarations shared between the extension's C files.
 */
#ifndef CLOACINA_H
#define CLOACINA_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "storage/condition_variable.h"
#include "utils/jsonb.h"
#include "utils/palloc.h"

/* Settings (cloacina.c) */
extern char *cloacina_database;
extern int	cloacina_naptime_ms;
extern int	cloacina_sql_workers;
extern int	cloacina_retention_s;
extern int	cloacina_max_tenants;
extern bool cloacina_preloaded;

/* limits a tenant cannot change (cloacina.c) */
extern int	cloacina_max_context_bytes;
extern int	cloacina_max_context_depth;
extern int	cloacina_sql_task_timeout_ms;
extern int	cloacina_sql_tenant_max_running;
extern int	cloacina_worker_lock_timeout_ms;
extern int	cloacina_worker_statement_timeout_ms;
extern int	cloacina_max_claim_wait_ms;
extern int	cloacina_cached_tenants;
extern int	cloacina_event_log_level;

/* event_log.c */
#define CLOACINA_EVENT_LOG_OFF (-1)
extern void cloacina_define_event_log_level(void);
extern void cloacina_log_event(const char *schema, const char *message);

#define CLOACINA_MAX_SQL_WORKERS 64

/* context.c: the limits on a context a tenant hands in */
extern void cloacina_check_context(Jsonb *context, const char *what);

/* wait.c: wake-ups for cloacina.wait() and for claims that wait for work */
extern void cloacina_wait_shmem_request(void);
extern void cloacina_wait_shmem_startup(void);
extern void cloacina_wake_waiters_at_commit(int64 execution_id);
extern void cloacina_wake_claimers_at_commit(const char *schema);
extern int64 cloacina_interval_usecs(const Interval *span);
typedef struct WorkWait
{
	ConditionVariable *cv;		/* NULL without shared memory: a growing pause */
	long		poll_sleep_ms;
} WorkWait;
extern void cloacina_work_wait_begin(WorkWait *w, const char *schema);
extern void cloacina_work_wait_sleep(WorkWait *w, TimestampTz deadline);
extern void cloacina_work_wait_end(WorkWait *w);

/* due.c: which tenants need the background worker, and when */
typedef struct CloacinaDue
{
	char		schema[NAMEDATALEN];
	TimestampTz due;			/* DT_NOEND: nothing due */
	bool		sql_ready;
} CloacinaDue;
extern void cloacina_due_shmem_request(void);
extern void cloacina_due_shmem_startup(void);
extern void cloacina_due_set_scheduler_latch(void);
extern bool cloacina_due_take_overflow(void);
extern int	cloacina_due_take(TimestampTz now, char (*schemas)[NAMEDATALEN], int max_schemas);
extern void cloacina_due_after_tick(const char *schema, TimestampTz next_due, bool sql_ready,
									int max_running, int weight);
extern void cloacina_due_forget(const char *schema);
extern void cloacina_due_push(const char *schema, TimestampTz due, bool sql_ready);
extern TimestampTz cloacina_due_next_wakeup(TimestampTz now, TimestampTz latest);
extern void cloacina_due_wake_sql_workers(void);
extern void cloacina_due_set_sql_worker_latch(int worker);
extern bool cloacina_due_pick_sql_tenant(int worker, char *schema);
extern void cloacina_due_after_failed_tick(const char *schema);
extern void cloacina_due_now(const char *schema);
extern void cloacina_due_release_sql_tenant(int worker, bool maybe_more);
extern void cloacina_due_set_relay(bool relay);
extern int	cloacina_due_take_all(CloacinaDue *entries, int max_entries);
extern void cloacina_due_put_back(const CloacinaDue *entries, int n);

/* relay.c: a Citus worker node hands its due times to the coordinator */
extern bool cloacina_relay_node(bool relaying, MemoryContext scratch);
extern bool cloacina_relay_pass(MemoryContext scratch);

/* sqlslot.c: the SQL task each worker of the SQL-task pool runs */
extern void cloacina_sqlslot_shmem_request(void);
extern void cloacina_sqlslot_shmem_startup(void);
extern void cloacina_sqlslot_fill(int worker, const char *schema, int64 task_id, int64 execution_id);
extern void cloacina_sqlslot_empty(int worker, char *held_schema);
extern bool cloacina_sqlslot_cancel_requested(int worker);
extern bool cloacina_sqlslot_runs(const char *schema, int64 task_id);

/* history.c: execution_events rows, written apart from the statement that changed the state */
#define HISTORY_COLUMNS 6
typedef struct History
{
	struct ArrayBuildState *columns[HISTORY_COLUMNS];	/* run, task, attempt,
														 * from, to, detail */
	int			n;
} History;
extern History *cloacina_history_begin(void);
#define CLOACINA_HISTORY_FULL 0
#define CLOACINA_HISTORY_EXCEPTIONS 1
extern int	cloacina_history_level;
extern void cloacina_define_history_level(void);
extern bool cloacina_history_keeps_expected(void);
extern void cloacina_history_add(History *h, const NullableDatum event[HISTORY_COLUMNS]);
#define HISTORY_VALUE(d) ((NullableDatum) {(d), false})
#define HISTORY_TEXT(s) ((NullableDatum) {CStringGetTextDatum(s), false})
#define HISTORY_NULL ((NullableDatum) {(Datum) 0, true})
extern void cloacina_history_write(const char *schema, History *h);

/* claim_floor.c: where a tenant's claims start in its queue of ready handler tasks */
typedef struct ClaimKey
{
	int32		neg_priority;	/* the order of tasks_claim_key: -priority,
								 * ready_at, id */
	TimestampTz ready_at;
	int64		id;
} ClaimKey;
extern bool cloacina_claim_floors;
extern const ClaimKey cloacina_least_claim_key;
extern void cloacina_claim_floor_shmem_request(void);
extern void cloacina_claim_floor_shmem_startup(void);
extern void cloacina_define_claim_floors(void);
extern int	cloacina_compare_claim_keys(const ClaimKey *a, const ClaimKey *b);
extern void cloacina_claim_floor_lower(const char *schema, const ClaimKey *key);
extern ClaimKey cloacina_claim_floor(const char *schema, Oid tenant);

/* transaction_guard.c: the scheduler ends tenant transactions open past their limit */
extern int	cloacina_tenant_transaction_timeout_ms;
extern TimestampTz cloacina_end_long_tenant_transactions(TimestampTz latest);

/* prepared.c: statements prepared once per backend */
extern void cloacina_execute_tenant(const char *template, const char *schema, int nargs,
									Oid *argtypes, Datum *values, const char *nulls);
extern bool cloacina_citus_installed(void);

/* tenant_caches.c: the caches of a backend that serves many tenants, bounded */
extern void cloacina_tenant_served(Oid namespace_oid);

/* tenant_path.c: shared by the C functions of the tenant path */
typedef struct TenantPath
{
	char	   *schema;			/* the tenant schema */
	int			guc_level;		/* the settings' nest level, undone on leaving */
} TenantPath;
extern Oid	cloacina_require_tenant(const char *schema);
extern TenantPath cloacina_enter_tenant(const char *schema);
extern TenantPath cloacina_enter_tenant_path(FunctionCallInfo fcinfo, int argno);
extern void cloacina_leave_tenant_path(TenantPath *path);
typedef Datum (*TenantBody) (FunctionCallInfo fcinfo, const char *schema);
extern Datum cloacina_in_current_tenant(FunctionCallInfo fcinfo, TenantBody body);
extern int	cloacina_array_elements(FunctionCallInfo fcinfo, int argno, Oid element_type,
									Datum **values, bool **nulls);
extern Datum cloacina_argument_as_array(FunctionCallInfo fcinfo, int argno, Oid element_type);
extern Datum cloacina_one_element_array(Datum value, bool isnull, Oid element_type);
extern int	cloacina_compare_int64(const void *a, const void *b);
extern Datum cloacina_utc_now(void);
extern void cloacina_return_accepted(FunctionCallInfo fcinfo, Datum *ids, bool *id_nulls, int n,
									 int64 *accepted, int n_accepted);

/*
 * claim.c: the claim of ready tasks. Columns of the claimed rows: task id, run id, workflow,
 * task, attempt, fence, input context, deadline; for SQL tasks also the SQL, the tenant's role,
 * the task's timeout_ms and the run's deadline.
 */
typedef enum ClaimKind
{
	CLAIM_HANDLER_TASKS,
	CLAIM_SQL_TASK
} ClaimKind;
#define CLAIM_DEADLINE_COLUMN 8
struct SPITupleTable;
extern struct SPITupleTable *cloacina_claim_tasks(const char *schema, ClaimKind kind, Datum worker,
												  Datum task_names, int32 max_tasks, Datum lease,
												  TimestampTz now, uint64 *n_claimed);

/* hint.c: wake-up hints for a tenant's workers */
extern void cloacina_hint(const char *schema, const char *payload);
extern void cloacina_hint_ready(const char *schema);
extern bool cloacina_hint_ready_pending(const char *schema);
extern void cloacina_withdraw_hint_ready(const char *schema);

/* run_options.c: the options of execute and execute_batch */
typedef struct RunOptions
{
	int32		priority;
	text	   *idempotency_key;	/* NULL: none */
	TimestampTz run_at;
	Interval   *timeout;		/* NULL: none */
} RunOptions;
extern void cloacina_parse_run_options(Jsonb *options, RunOptions *out);

/* propagate.c: after tasks of a run ended, their dependents */
extern void cloacina_propagate_runs(const char *schema, Datum run_ids, Datum task_names);
extern void cloacina_propagate_run(const char *schema, Datum run_id, Datum finished);

/* complete.c: completes tasks; ends runs (status, final context, event, waiters) */
extern bool cloacina_complete_task(const char *schema, int64 task_id, int64 fence, Datum output);
extern void cloacina_finalize_runs(const char *schema, Datum run_ids, const char *forced_status,
								   const char *forced_error);

/* fail.c: failed attempts, in the tenant path entered */
typedef struct TaskFailures
{
	Datum		task_ids;		/* bigint[] */
	Datum		fences;			/* bigint[] */
	Datum		errors;			/* text[] */
	Datum		retryable;		/* boolean[] */
	Datum		seen_leases;	/* timestamptz[] the reaper saw, or 0 */
	bool		retry_now;		/* no backoff: the worker failed, not the task */
} TaskFailures;
extern int64 *cloacina_fail_tasks(const char *schema, const TaskFailures *failures, int n,
								  int *n_accepted);
extern bool cloacina_fail_task(const char *schema, int64 task_id, int64 fence, const char *error,
							   bool retryable);

/* reap.c: attempts whose worker is gone */
extern int	cloacina_reap_tasks(const char *schema, int max_tasks);

/* results.c: a run's status row */
extern void cloacina_read_run_status(const char *schema, Datum execution_id, bool isnull);

/* unit.c: one unit of background work in a transaction of its own */
extern void cloacina_unit_settings(void);
extern void cloacina_unit_arm_timeout(void);
extern void cloacina_unit_begin(const char *activity);
extern void cloacina_unit_begin_block(const char *activity);
extern void cloacina_unit_commit(void);
extern void cloacina_unit_abandon(void);
extern void cloacina_unit_recover(MemoryContext scratch);

/* scheduler.c and sqltask.c: the background workers */
extern void cloacina_register_workers(void);

#endif							/* CLOACINA_H */
