/*
 * context.c: the run context's JSON: cloacina.context_merge(base jsonb, patch jsonb), the deep
 * merge that builds a task's input and a run's final context (objects merge key by key
 * recursively, anything else in patch replaces base, a NULL side yields the other); and the
 * limits on the size and nesting depth of the contexts a tenant hands in (cloacina.max_context_bytes,
 * cloacina.max_context_depth), checked wherever one enters: execute, complete, a SQL task's output,
 * a schedule's context.
 *
 * The merge builds its result in one pass into one parse state, so time and memory are linear
 * in its inputs: a merge that serialised every merged level on its own was quadratic in the
 * depth (an object nested 8,000 deep took 23 GB).
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "cloacina.h"

PG_FUNCTION_INFO_V1(cloacina_context_merge);
PG_FUNCTION_INFO_V1(cloacina_check_context_fn);

static bool
is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static void
depth_exceeded(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s is nested more than %d levels deep", what, cloacina_max_context_depth),
			 errhint("cloacina.max_context_depth sets the limit.")));
}

/*
 * Pushes the merge of two objects into "state": base's keys that patch lacks, then the keys
 * both have whose values are objects (merged one level down), then patch's other keys. The
 * parse state sorts keys when the object ends, so the order of pushing does not matter.
 */
static JsonbValue *
push_merged(JsonbParseState **state, JsonbContainer *base, JsonbContainer *patch, int depth)
{
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	key;
	JsonbValue	value;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();
	if (depth > cloacina_max_context_depth)
		depth_exceeded("a merged context");

	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(base);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		JsonbValue *in_patch;

		if (token != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &value, true);
		in_patch = getKeyJsonValueFromContainer(patch, key.val.string.val, key.val.string.len, NULL);
		if (in_patch == NULL)
		{
			pushJsonbValue(state, WJB_KEY, &key);
			pushJsonbValue(state, WJB_VALUE, &value);
		}
		else if (is_object(&value) && is_object(in_patch))
		{
			pushJsonbValue(state, WJB_KEY, &key);
			(void) push_merged(state, value.val.binary.data, in_patch->val.binary.data, depth + 1);
		}
		if (in_patch != NULL)
			pfree(in_patch);
	}

	it = JsonbIteratorInit(patch);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		JsonbValue *in_base;
		bool		merged;

		if (token != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &value, true);
		in_base = is_object(&value) ?
			getKeyJsonValueFromContainer(base, key.val.string.val, key.val.string.len, NULL) : NULL;
		merged = in_base != NULL && is_object(in_base);
		if (in_base != NULL)
			pfree(in_base);
		if (merged)
			continue;			/* pushed with base's keys */
		pushJsonbValue(state, WJB_KEY, &key);
		pushJsonbValue(state, WJB_VALUE, &value);
	}
	return pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

Datum
cloacina_context_merge(PG_FUNCTION_ARGS)
{
	Jsonb	   *base;
	Jsonb	   *patch;
	JsonbParseState *state = NULL;

	if (PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(0))
			PG_RETURN_NULL();
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	}
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	base = PG_GETARG_JSONB_P(0);
	patch = PG_GETARG_JSONB_P(1);
	if (!JB_ROOT_IS_OBJECT(base) || !JB_ROOT_IS_OBJECT(patch))
		PG_RETURN_JSONB_P(patch);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(push_merged(&state, &base->root, &patch->root, 1)));
}

/*
 * Refuses a context (or output) larger than cloacina.max_context_bytes or nested deeper than
 * cloacina.max_context_depth, with SQLSTATE 54000 and "what" naming it. One pass over the
 * tokens, stopping at the first level too deep.
 */
void
cloacina_check_context(Jsonb *context, const char *what)
{
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	value;
	int			depth = 0;
	Size		size = VARSIZE(context);

	if (size > (Size) cloacina_max_context_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large (%zu bytes, the limit is %d)", what, size,
						cloacina_max_context_bytes),
				 errhint("cloacina.max_context_bytes sets the limit; keep large data in tables and pass keys.")));

	it = JsonbIteratorInit(&context->root);
	while ((token = JsonbIteratorNext(&it, &value, false)) != WJB_DONE)
	{
		if (token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY)
		{
			if (++depth > cloacina_max_context_depth)
				depth_exceeded(what);
		}
		else if (token == WJB_END_OBJECT || token == WJB_END_ARRAY)
			depth--;
	}
}

/* cloacina._check_context(context jsonb, what text): the same for plpgsql callers */
Datum
cloacina_check_context_fn(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		cloacina_check_context(PG_GETARG_JSONB_P(0),
							   PG_ARGISNULL(1) ? "context" : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}
