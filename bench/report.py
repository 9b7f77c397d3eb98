#!/usr/bin/env python3
"""bench/report.py — turns the raw measurements of bench/run into RESULTS.md and PNG plots.

    python3 bench/report.py --data build/bench --report bench/RESULTS.md --plots bench/plots

Inputs (written by bench/run into --data): results.tsv (scenario, metric, rep, value), meta.tsv
(versions and machine), lat/<name>.r<rep>.txt (one latency in microseconds per line),
series/<name>.r<rep>.tsv (second, count), tenants.tsv, profile/. Every figure is the median over
the repetitions; every ratio is computed within each repetition (systems measured side by side)
and then the median of those ratios is reported. Plots are drawn with gnuplot.
"""
import argparse
import collections
import glob
import os
import re
import statistics
import subprocess


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class Data:
    def __init__(self, root):
        self.root = root
        self.values = collections.defaultdict(dict)  # metric -> rep -> value
        with open(os.path.join(root, "results.tsv")) as f:
            next(f)
            for line in f:
                scenario, metric, rep, value = line.rstrip("\n").split("\t")
                self.values[metric][int(rep)] = float(value)
        self.meta = {}
        with open(os.path.join(root, "meta.tsv")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("\t")
                self.meta[key] = value

    def med(self, metric):
        return median(list(self.values.get(metric, {}).values()))

    def ratio(self, num, den):
        """Median over repetitions of num/den, both measured in the same repetition."""
        a, b = self.values.get(num, {}), self.values.get(den, {})
        return median([a[r] / b[r] for r in a if r in b and b[r]])

    def latencies(self, name):
        """{rep: sorted latencies in ms}"""
        out = {}
        for path in sorted(glob.glob(os.path.join(self.root, "lat", f"{name}.r*.txt"))):
            rep = int(re.search(r"\.r(\d+)\.txt$", path).group(1))
            with open(path) as f:
                out[rep] = sorted(float(x) / 1000.0 for x in f if x.strip())
        return out

    def lat_pct(self, name, p):
        return median([percentile(v, p) for v in self.latencies(name).values() if v])

    def lat_ratio(self, num, den, p_num=50, p_den=50):
        a, b = self.latencies(num), self.latencies(den)
        return median([percentile(a[r], p_num) / percentile(b[r], p_den) for r in a if r in b and a[r] and b[r]])

    def series(self, name):
        out = {}
        for path in sorted(glob.glob(os.path.join(self.root, "series", f"{name}.r*.tsv"))):
            rep = int(re.search(r"\.r(\d+)\.tsv$", path).group(1))
            with open(path) as f:
                out[rep] = [tuple(float(x) for x in line.split("\t")) for line in f if line.strip()]
        return out


def fmt(x, digits=0):
    if x != x:  # NaN
        return "n/a"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def minute_decay(series):
    """(last full minute / first minute, minutes) of the longest repetition; None under 10 minutes."""
    counts = max(([c for _, c in points] for points in series.values()), key=len, default=[])
    minutes = [statistics.mean(counts[i:i + 60]) for i in range(0, len(counts) - 59, 60)]
    if len(minutes) < 10 or not minutes[0]:
        return None, len(counts)
    return minutes[-1] / minutes[0], len(minutes)


def decay(series):
    """Throughput of the last 10 full seconds relative to the first 10 (median over reps)."""
    ratios = []
    for points in series.values():
        counts = [c for _, c in points]
        if len(counts) >= 6:
            n = min(10, len(counts) // 2)
            first, last = statistics.mean(counts[:n]), statistics.mean(counts[-n:])
            if first:
                ratios.append(last / first)
    return median(ratios)


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def write_dat(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")


def plots(d, plot_dir, work):
    os.makedirs(plot_dir, exist_ok=True)
    term = "set terminal pngcairo size 900,520 font 'sans,10'\n"
    made = []

    # Throughput over time (repetition 1 of each burn-down).
    curves = []
    for name, title in [("cloacina_one", "cloacina 1-task workflows (tasks/s)"),
                        ("cloacina_diamond", "cloacina 5-task diamonds (tasks/s)"),
                        ("cloacina_chain3", "cloacina 3-task chains (tasks/s)"),
                        ("cloacina_sustained", "cloacina 1-task, sustained (tasks/s)"),
                        ("graphile", "graphile-worker jobs/s"), ("pgboss", "pg-boss jobs/s"),
                        ("dbos_chain3", "DBOS 3-step workflows started/s")]:
        s = d.series(name)
        # a line needs two points (a smoke burn-down can finish within its first second)
        if s and len(s[sorted(s)[0]]) >= 2:
            rep = sorted(s)[0]
            path = os.path.join(work, f"series_{name}.dat")
            write_dat(path, s[rep])
            curves.append(f"'{path}' using 1:2 with lines lw 2 title '{title}'")
    if curves:
        out = os.path.join(plot_dir, "throughput_over_time.png")
        gnuplot(term + f"set output '{out}'\nset title 'Burn-down throughput over time (repetition 1)'\n"
                "set xlabel 'seconds since the workers started'\nset ylabel 'completed per second'\n"
                "set grid\nset key outside bottom center horizontal\nset yrange [0:*]\n"
                "plot " + ", ".join(curves) + "\n")
        made.append(("throughput_over_time.png", "Burn-down throughput per second"))

    # Latency distributions (CDF), scenario 5 and fairness.
    def cdf_plot(names, filename, title, xlabel):
        curves = []
        for name, label in names:
            lat = d.latencies(name)
            if not lat or len(lat[sorted(lat)[0]]) < 2:
                continue
            values = lat[sorted(lat)[0]]
            path = os.path.join(work, f"cdf_{name}.dat")
            write_dat(path, [(v, (i + 1) / len(values)) for i, v in enumerate(values)])
            curves.append(f"'{path}' using 1:2 with lines lw 2 title '{label}'")
        if curves:
            out = os.path.join(plot_dir, filename)
            gnuplot(term + f"set output '{out}'\nset title '{title}'\nset logscale x\n"
                    f"set xlabel '{xlabel}'\nset ylabel 'fraction of samples'\nset grid\n"
                    "set key bottom right\nset yrange [0:1]\nplot " + ", ".join(curves) + "\n")
            made.append((filename, title))

    cdf_plot([("one", "cloacina 1-task execute -> result"), ("chain3", "cloacina 3-task chain"),
              ("pgbench", "pgbench -N, 1 client (one transaction)"),
              ("graphile", "graphile-worker add -> handler start"),
              ("dbos_chain3", "DBOS 3-step workflow, in-process")],
             "latency_cdf.png", "Latency distributions (repetition 1)", "milliseconds (log scale)")
    cdf_plot([("fair_sql_unloaded", "SQL tasks, unloaded"), ("fair_sql_flood", "SQL tasks, under flood"),
              ("fair_sdk_unloaded", "SDK runners, unloaded"), ("fair_sdk_flood", "SDK runners, under flood")],
             "fairness_cdf.png", "Trickling tenants: wait from execute to claim (repetition 1)",
             "milliseconds (log scale)")

    # Scaling with the claim batch.
    rows = []
    for b in (1, 10, 100):
        rows.append((b, d.med(f"raw_b{b}_jobs_per_s"), d.med(f"api_b{b}_tasks_per_s"), d.med(f"sdk_b{b}_tasks_per_s")))
    if any(r[1] == r[1] for r in rows):
        path = os.path.join(work, "batch.dat")
        write_dat(path, rows)
        out = os.path.join(plot_dir, "claim_batch_scaling.png")
        gnuplot(term + f"set output '{out}'\nset title 'Claim+complete throughput by batch size (medians)'\n"
                "set logscale xy\nset xlabel 'batch size'\nset ylabel 'jobs or tasks per second'\nset grid\n"
                "set xtics (1, 10, 100)\nset key top left\n"
                f"plot '{path}' using 1:2 with linespoints lw 2 title 'raw SKIP LOCKED (pgbench, 8 clients)', "
                f"'' using 1:3 with linespoints lw 2 title 'cloacina SQL API (pgbench, 8 clients)', "
                f"'' using 1:4 with linespoints lw 2 title 'cloacina SDK (1 runner)'\n")
        made.append(("claim_batch_scaling.png", "Claim+complete throughput by batch size"))

    # Tenant creation cost as the count grows.
    tpath = os.path.join(d.root, "tenants.tsv")
    if os.path.exists(tpath):
        out = os.path.join(plot_dir, "tenant_creation.png")
        gnuplot(term + f"set output '{out}'\nset title 'create_tenant: time per tenant (batches of 50 per transaction)'\n"
                "set xlabel 'tenants existing'\nset ylabel 'ms per tenant'\nset grid\nset yrange [0:*]\n"
                f"plot '{tpath}' every ::1 using 1:2 with lines lw 2 notitle\n")
        made.append(("tenant_creation.png", "Time per tenant as the count grows"))
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--plots", required=True)
    args = ap.parse_args()
    d = Data(args.data)
    work = os.path.join(args.data, "plotdata")
    os.makedirs(work, exist_ok=True)
    made = plots(d, args.plots, work)
    m = d.meta
    smoke = m.get("mode") == "smoke"
    md = []
    md.append("# cloacina benchmark results\n")
    if smoke:
        md.append("**Smoke run** (`bench/run --smoke`): tiny sizes, one repetition; the figures only show "
                  "that every scenario runs. The real results are `bench/RESULTS.md` from `make bench`.\n")
    md.append(f"Generated by `bench/run` on {m.get('date')} in {fmt(d.med('elapsed_s'))} s. "
              f"Every figure is the median of {m.get('reps')} repetitions; in each repetition the compared "
              "systems run one after the other on the same private cluster, and each ratio is computed "
              "within a repetition before taking the median. The machine was shared with other work "
              "during the run (other test suites of the team); absolute figures are noisy, ratios less so.\n")
    md.append("## Machine and versions\n")
    md.append(table(["item", "value"], [(k, v.replace("|", "/")) for k, v in m.items() if k not in ("mode", "reps", "date")]))

    # ---- goals
    pg_p50 = d.lat_pct("pgbench", 50)
    one_p50, chain_p50 = d.lat_pct("one", 50), d.lat_pct("chain3", 50)
    goals = []

    def goal(text, value, ok, detail):
        goals.append((text, value, "met" if ok else "**not met**", detail))

    for b in (1, 10, 100):
        r = d.ratio(f"api_b{b}_tasks_per_s", f"raw_b{b}_jobs_per_s")
        goal(f"claim+complete via the SQL API ≥ 0.8 × raw, batch {b}", f"{fmt(r, 2)} ×", r >= 0.8,
             f"{fmt(d.med(f'api_b{b}_tasks_per_s'))} vs {fmt(d.med(f'raw_b{b}_jobs_per_s'))} per s; the raw "
             f"queue with cloacina's writes: {fmt(d.ratio(f'model_b{b}_jobs_per_s', f'raw_b{b}_jobs_per_s'), 2)} ×")
    r = d.ratio("one_workflows_per_s", "graphile_jobs_per_s")
    goal("1-task burn-down ≥ 1.5 × graphile-worker jobs/s", f"{fmt(r, 2)} ×", r >= 1.5,
         f"{fmt(d.med('one_workflows_per_s'))} vs {fmt(d.med('graphile_jobs_per_s'))} per s, the same local queue "
         f"(500); with 16 per runner: {fmt(d.ratio('one_q16_workflows_per_s', 'graphile_jobs_per_s'), 2)} ×")
    r = d.ratio("one_workflows_per_s", "pgboss_jobs_per_s")
    goal("pg-boss far behind (cloacina / pg-boss > 1)", f"{fmt(r, 2)} ×", r > 1,
         f"pg-boss {fmt(d.med('pgboss_jobs_per_s'))} per s")
    r = d.lat_ratio("one", "pgbench")
    goal("1-task p50 ≤ 4 × single-client pgbench -N latency", f"{fmt(r, 1)} ×", r <= 4,
         f"{fmt(one_p50, 2)} ms vs {fmt(pg_p50, 3)} ms; the raw queue floor "
         f"{fmt(d.lat_pct('rawfloor', 50), 2)} ms is {fmt(d.lat_ratio('rawfloor', 'pgbench'), 1)} ×")
    r = d.lat_ratio("one", "graphile")
    goal("1-task p50 ≤ graphile-worker p50 (add → start)", f"{fmt(r, 2)} ×", r <= 1,
         f"{fmt(one_p50, 2)} ms vs {fmt(d.lat_pct('graphile', 50), 2)} ms; the same interval as "
         f"graphile's, execute → handler start: {fmt(d.lat_pct('one_start', 50), 2)} ms = "
         f"{fmt(d.lat_ratio('one_start', 'graphile'), 2)} ×; the raw queue floor of our round trip (three commits, "
         f"two hand-offs): {fmt(d.lat_ratio('rawfloor', 'graphile'), 2)} ×")
    r = d.lat_ratio("chain3", "one")
    goal("3-task chain p50 ≤ 2.5 × 1-task p50", f"{fmt(r, 2)} ×", r <= 2.5,
         f"{fmt(chain_p50, 2)} ms vs {fmt(one_p50, 2)} ms")
    for name, label in (("one", "1-task"), ("chain3", "3-task chain")):
        r = d.lat_ratio(name, name, 99, 50)
        goal(f"{label} p99 ≤ 4 × p50", f"{fmt(r, 2)} ×", r <= 4,
             f"p99 {fmt(d.lat_pct(name, 99), 2)} ms")
    n_tenants = int(d.med("tenants_max")) if d.values.get("tenants_max") else 0
    r = d.lat_ratio(f"tenants_{n_tenants}", "tenants_1")
    goal(f"at {n_tenants:,} tenants: 1-task p50 ≤ 1.3 × at 1 tenant", f"{fmt(r, 2)} ×", r <= 1.3,
         f"{fmt(d.lat_pct(f'tenants_{n_tenants}', 50), 2)} ms vs {fmt(d.lat_pct('tenants_1', 50), 2)} ms")
    cpu = d.med("idle_cpu_pct_n")
    goal(f"idle background-worker CPU < 1 % of a core (at {n_tenants:,} tenants)", f"{fmt(cpu, 2)} %", cpu < 1,
         f"at 1 tenant: {fmt(d.med('idle_cpu_pct_1'), 2)} %")
    for mode, label in (("sql", "SQL tasks"), ("sdk", "SDK runners")):
        r = d.lat_ratio(f"fair_{mode}_flood", f"fair_{mode}_unloaded", 95, 95)
        goal(f"trickling p95 under flood ≤ 2 × unloaded ({label})", f"{fmt(r, 2)} ×", r <= 2,
             f"{fmt(d.lat_pct(f'fair_{mode}_flood', 95), 1)} ms vs {fmt(d.lat_pct(f'fair_{mode}_unloaded', 95), 1)} ms")
    # DBOS Transact on its own shape (issue 16): the same 3-step workflows, the same concurrency.
    r = d.ratio("chain3_workflows_per_s", "dbos_chain3_workflows_per_s")
    goal("3-task chain burn-down ≥ 20 × DBOS Transact 3-step workflows/s", f"{fmt(r, 1)} ×", r >= 20,
         f"{fmt(d.med('chain3_workflows_per_s'))} vs {fmt(d.med('dbos_chain3_workflows_per_s'))} per s; "
         f"1-task/1-step: {fmt(d.ratio('one_workflows_per_s', 'dbos_one_workflows_per_s'), 1)} ×")
    r = d.lat_ratio("chain3", "dbos_chain3")
    goal("3-task chain p50 ≤ 0.5 × DBOS Transact in-process 3-step p50", f"{fmt(r, 2)} ×", r <= 0.5,
         f"{fmt(chain_p50, 2)} ms vs {fmt(d.lat_pct('dbos_chain3', 50), 2)} ms")
    r, span = minute_decay(d.series("cloacina_sustained"))
    if r is None:
        goal("sustained burn-down of 10 minutes: last minute ≥ 0.9 × first", "not run", False,
             f"this run's sustained burn-down lasted {span} s; BENCH_SUSTAINED_RUNS=9000000 makes it "
             "last 10 minutes or more on this machine")
    else:
        goal("sustained burn-down of 10 minutes: last minute ≥ 0.9 × first", f"{fmt(r, 2)} ×", r >= 0.9,
             f"{span} full minutes, {fmt(d.med('sustained_workflows_per_s'))} per s over all")
    md.append("## Goals (issues 6 and 16)\n")
    md.append(table(["goal", "measured", "verdict", "figures (medians)"], goals))

    # ---- scenario tables
    md.append("## 1. The limit: pgbench -N and a raw SKIP LOCKED queue\n")
    md.append(f"`pgbench -N -M prepared -c 8 -j 2` on a scale-10 database: **{fmt(d.med('pgbench_N_tps'))} tps**. "
              "The raw queue (`bench/sql/raw_claim_complete.sql`) claims up to *batch* jobs from a plain jobs "
              "table with one `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)` and marks them done with a "
              "second statement: two round trips, two commits, like our claim + complete.\n")
    md.append("The raw queue *with cloacina's writes* (`bench/sql/raw_model_*.sql`) does, in the same two "
              "statements, the rows a one-task run writes in cloacina: the task updated twice, the run's row "
              "updated, and an event for each of the three state changes (claimed, completed, run ended) — "
              "with no fencing, locking order, context merge or API around them. It is the floor for "
              "cloacina's data model; the gap between the two raw queues is what the data model costs.\n")
    rows = []
    for b in (1, 10, 100):
        rows.append((b, fmt(d.med(f"raw_b{b}_jobs_per_s")), f"{fmt(d.ratio(f'raw_b{b}_jobs_per_s', 'pgbench_N_tps'), 2)} ×",
                     fmt(d.med(f"model_b{b}_jobs_per_s")),
                     f"{fmt(d.ratio(f'model_b{b}_jobs_per_s', f'raw_b{b}_jobs_per_s'), 2)} ×"))
    md.append(table(["batch", "raw jobs/s", "ratio to pgbench -N tps", "raw with cloacina's writes, jobs/s",
                     "its ratio to raw"], rows))

    md.append("## 2. Our claim path: SQL API and SDK\n")
    md.append("SQL API: the same pgbench setup (8 clients) running `cloacina.claim` + `cloacina.complete` "
              "(batch 1) or `cloacina.complete_batch` (`bench/sql/api_*.sql`) on a tenant prefilled with 1-task "
              "runs (completing the task also finalises its run). SDK: one `DefaultRunner` with max(16, batch) "
              "no-op handler threads and `claim_batch` = batch (`cloacina_bench burndown --runners 1`).\n")
    rows = []
    for b in (1, 10, 100):
        rows.append((b, fmt(d.med(f"raw_b{b}_jobs_per_s")), fmt(d.med(f"api_b{b}_tasks_per_s")),
                     f"{fmt(d.ratio(f'api_b{b}_tasks_per_s', f'raw_b{b}_jobs_per_s'), 3)} ×",
                     fmt(d.med(f"sdk_b{b}_tasks_per_s")),
                     f"{fmt(d.ratio(f'sdk_b{b}_tasks_per_s', f'raw_b{b}_jobs_per_s'), 3)} ×"))
    md.append(table(["batch", "raw jobs/s", "SQL API tasks/s", "API / raw", "SDK tasks/s", "SDK / raw"], rows))
    rows = []
    for b in (1, 10, 100):
        rows.append((b, fmt(d.med(f"model_b{b}_jobs_per_s")), fmt(d.med(f"api_b{b}_tasks_per_s")),
                     f"{fmt(d.ratio(f'api_b{b}_tasks_per_s', f'model_b{b}_jobs_per_s'), 2)} ×"))
    md.append("Against the raw queue with cloacina's writes (what is left is the engine's own overhead: "
              "fences, the locking order, trigger rules and context merge, the API calls):\n")
    md.append(table(["batch", "raw with cloacina's writes, jobs/s", "SQL API tasks/s", "API / that"], rows))
    held = re.search(r"held=(\d+)", m.get("sizes", ""))
    md.append(f"Heartbeat of {fmt(int(held.group(1))) if held else 'the'} claimed tasks, one statement "
              "per beat (median of 5 beats): `heartbeat_batch`, which the SDK sends, against a "
              "`heartbeat()` call per task in one statement (how the SDK renewed leases before; "
              "`heartbeat()` was plpgsql then and is C now, so this understates the change).\n")
    md.append(table(["heartbeat_batch ms", "heartbeat() per task ms", "batch / per task"],
                    [(fmt(d.med("heartbeat_batch_ms"), 1), fmt(d.med("heartbeat_calls_ms"), 1),
                      f"{fmt(d.ratio('heartbeat_batch_ms', 'heartbeat_calls_ms'), 2)} ×")]))
    md.append("The same number of claimed one-task runs ended in one call each: `complete_batch`, and "
              "`fail_batch` (not retryable, so each run fails too).\n")
    md.append(table(["complete_batch ms", "fail_batch ms", "fail / complete"],
                    [(fmt(d.med("complete_batch_ms"), 1), fmt(d.med("fail_batch_ms"), 1),
                      f"{fmt(d.ratio('fail_batch_ms', 'complete_batch_ms'), 2)} ×")]))

    md.append("## 3. Burn-down with SDK workers\n")
    md.append(f"{m.get('sizes', '')}. The runs are submitted first (`execute_batch`, 1,000 per call; timed "
              "apart), then 4 `DefaultRunner`s with 4 no-op handler threads each (total concurrency 16) "
              "drain the tenant, each claiming up to 125 tasks at a time into a local queue (`claim_batch` "
              "125, `prefetch` 125: 500 in all, graphile-worker's local queue in its performance test); the "
              "clock stops when the last completion is accepted. The small-queue row is the same burn-down "
              "with `claim_batch` 16 and `prefetch` 16 per runner (the setting of earlier results).\n")
    one_series = d.series("cloacina_one")
    rows = [("1-task workflows", fmt(d.med("one_workflows_per_s")), fmt(d.med("one_workflows_per_s")),
             fmt(d.med("one_submit_per_s")), f"{fmt(decay(one_series), 2)} ×"),
            ("1-task workflows, small local queue", fmt(d.med("one_q16_workflows_per_s")),
             fmt(d.med("one_q16_workflows_per_s")), "", ""),
            ("5-task diamonds", fmt(d.med("diamond_workflows_per_s")), fmt(d.med("diamond_tasks_per_s")), "",
             f"{fmt(decay(d.series('cloacina_diamond')), 2)} ×"),
            ("3-task chains", fmt(d.med("chain3_workflows_per_s")), fmt(3 * d.med("chain3_workflows_per_s")), "",
             f"{fmt(decay(d.series('cloacina_chain3')), 2)} ×"),
            ("1-task workflows, sustained (1 repetition)", fmt(d.med("sustained_workflows_per_s")),
             fmt(d.med("sustained_workflows_per_s")), "", f"{fmt(decay(d.series('cloacina_sustained')), 2)} ×")]
    md.append(table(["workload", "workflows/s", "tasks/s", "submitted runs/s", "last 10 s / first 10 s"], rows))
    lost = {k: sum(d.values.get(k, {}).values())
            for k in ("one_failed", "one_unfinished", "one_q16_unfinished", "diamond_failed", "diamond_unfinished",
                      "chain3_failed", "chain3_unfinished", "sustained_unfinished")}
    if any(lost.values()):
        md.append(f"**Lost work**, summed over the repetitions: 1-task burn-down {fmt(lost['one_failed'])} tasks failed "
                  f"and {fmt(lost['one_unfinished'])} never finished ({fmt(lost['one_q16_unfinished'])} with the small "
                  f"queue); diamonds {fmt(lost['diamond_failed'])} failed, "
                  f"{fmt(lost['diamond_unfinished'])} never finished; chains {fmt(lost['chain3_failed'])} failed, "
                  f"{fmt(lost['chain3_unfinished'])} never finished; sustained burn-down "
                  f"{fmt(lost['sustained_unfinished'])} never finished (no-op handlers never fail: these are engine "
                  "errors, e.g. a deadlock between concurrent `complete_batch` calls; see the run's log). A burn-down "
                  "that stops progressing for 20 s is ended and its rate counts only the tasks that ended.\n")
    secs = median([len(v) for v in one_series.values()])
    sustained_secs = median([len(v) for v in d.series("cloacina_sustained").values()])
    md.append(f"Tasks per claim round trip: {fmt(d.med('one_tasks_per_claim'), 1)}; per completion round trip: "
              f"{fmt(d.med('one_tasks_per_completion'), 1)}. The 1-task burn-down lasted {fmt(secs)} s per "
              f"repetition, the sustained one {fmt(sustained_secs)} s; the per-second series is plotted below "
              "(decay = mean of the last 10 s over the first 10 s, or of the last and first halves of a "
              "shorter run; below 1 means throughput fell as the run went on).\n")

    md.append("## 4. Peers in the same run\n")
    md.append("Installed by `bench/run` from npm into `bench/.peers` (git-ignored); drivers in `bench/peers.js`. "
              "Same cluster, same job count as the 1-task burn-down, jobs inserted first, no-op handlers. "
              "graphile-worker: concurrency 16, local queue of 500, batched completion "
              "(`completeJobBatchDelay: 0`), the settings of its own performance test. pg-boss: 4 workers "
              "fetching batches of 1,000 (its worker sleeps its polling interval, at least 0.5 s, between fetches).\n")
    rows = [("cloacina (SDK, 1-task workflows)", fmt(d.med("one_workflows_per_s")), "1.00 ×"),
            ("graphile-worker " + m.get("graphile-worker", ""), fmt(d.med("graphile_jobs_per_s")),
             f"{fmt(d.ratio('graphile_jobs_per_s', 'one_workflows_per_s'), 2)} ×"),
            ("pg-boss " + m.get("pg-boss", ""), fmt(d.med("pgboss_jobs_per_s")),
             f"{fmt(d.ratio('pgboss_jobs_per_s', 'one_workflows_per_s'), 2)} ×")]
    md.append(table(["system", "jobs/s", "relative to cloacina"], rows))
    md.append("DBOS Transact (`@dbos-inc/dbos-sdk` " + m.get("dbos-sdk", "") + ", a durable-workflow library) is "
              "measured on its own shape: workflows of 3 (or 1) no-op steps, each step checkpointed in its "
              "system database (a database of its own, `dbos_bench`, on the same cluster) before the next one "
              "starts. The workflows are enqueued first with a `DBOSClient` (timed apart), then one process "
              "launches DBOS with the queue's worker concurrency 16; the clock runs from the first workflow "
              "dequeued to the last recorded as succeeded, and the driver checks that every workflow succeeded "
              "with all its steps checkpointed. DBOS dispatches from its queue by polling, at most the worker "
              "concurrency per poll; the poll interval is set to 10 ms (default 1 s, which caps a queue at 16 "
              "workflows/s here). cloacina runs the same shapes: its 3-task chain and 1-task burn-downs "
              "(section 3), concurrency 16 in one process.\n")
    rows = [("3 steps / 3-task chain", fmt(d.med("dbos_chain3_workflows_per_s")), fmt(d.med("chain3_workflows_per_s")),
             f"{fmt(d.ratio('chain3_workflows_per_s', 'dbos_chain3_workflows_per_s'), 1)} ×",
             fmt(d.med("dbos_chain3_submit_per_s"))),
            ("1 step / 1-task", fmt(d.med("dbos_one_workflows_per_s")), fmt(d.med("one_workflows_per_s")),
             f"{fmt(d.ratio('one_workflows_per_s', 'dbos_one_workflows_per_s'), 1)} ×", "")]
    md.append(table(["shape", "DBOS workflows/s", "cloacina workflows/s", "cloacina / DBOS",
                     "DBOS enqueued/s (one at a time, 16 in flight)"], rows))

    md.append("## 5. Latency\n")
    md.append("Sequential round trips with idle workers waiting: cloacina `execute` → result (the SDK's "
              "`execute`: `cloacina.execute` then `cloacina.wait`, one runner submitting, another with idle "
              "handler threads), and its first part, `execute` → the handler's start (the interval "
              "graphile-worker's row measures: two commits and one hand-off); single-client `pgbench -N` "
              "(one transaction); graphile-worker `addJob` → handler start (one idle worker, default "
              "settings); DBOS Transact's 3-step workflow started and "
              "awaited in the process that runs it (`DBOS.startWorkflow`, then `getResult`: no queue, so "
              "no hand-off between processes, but every step checkpointed); and the floor of such a round trip for any "
              "PostgreSQL queue (`cloacina_bench raw-latency`: insert a job and commit with NOTIFY, a woken "
              "worker claims it and commits, completes it and commits with NOTIFY, the client wakes — three "
              "commits and two hand-offs on a plain table). Milliseconds.\n")
    rows = []
    for name, label in (("one", "cloacina 1-task workflow"),
                        ("one_start", "cloacina 1-task workflow, execute → handler start"),
                        ("chain3", "cloacina 3-task chain"),
                        ("pgbench", "pgbench -N, 1 client"), ("graphile", "graphile-worker add → start"),
                        ("dbos_chain3", "DBOS Transact 3-step workflow, in-process start → result"),
                        ("rawfloor", "raw queue floor: enqueue → claimed → completed → notified")):
        rows.append((label, fmt(d.lat_pct(name, 50), 2), fmt(d.lat_pct(name, 95), 2), fmt(d.lat_pct(name, 99), 2),
                     f"{fmt(d.lat_ratio(name, 'pgbench'), 1)} ×"))
    md.append(table(["round trip", "p50", "p95", "p99", "p50 / pgbench p50"], rows))

    md.append("## 6. Tenant scale\n")
    checkpoint = int(d.med("tenants_checkpoint")) if d.values.get("tenants_checkpoint") else 0
    md.append(f"All earlier tenants are removed, one tenant (`scale_probe`) is created and measured, then "
              f"tenants (schema only, no role) are created 50 per transaction up to {n_tenants:,} "
              "(`max_locks_per_transaction = 256`). The 1-task latency of scenario 5 is measured in "
              "`scale_probe` at 1 tenant, at the checkpoint and at the end; the idle CPU is the CPU time of "
              "the processes whose `backend_type` starts with `cloacina`, over an idle interval.\n")
    trows = []
    tpath = os.path.join(d.root, "tenants.tsv")
    if os.path.exists(tpath):
        with open(tpath) as f:
            next(f)
            points = [tuple(float(x) for x in line.split("\t")) for line in f if line.strip()]
        step = max(1, len(points) // 10)
        previous = 1
        for i in range(0, len(points), step):
            chunk = points[i:i + step]
            trows.append((f"{previous + 1:,} – {int(chunk[-1][0]):,}",
                          fmt(statistics.mean(p[1] for p in chunk), 1)))
            previous = int(chunk[-1][0])
    md.append(table(["tenants", "ms per tenant"], trows))
    rows = []
    for n in sorted({1, checkpoint, n_tenants}):
        if n:
            rows.append((f"{n:,}", fmt(d.lat_pct(f"tenants_{n}", 50), 2), fmt(d.lat_pct(f"tenants_{n}", 95), 2),
                         fmt(d.lat_pct(f"tenants_{n}", 99), 2), f"{fmt(d.lat_ratio(f'tenants_{n}', 'tenants_1'), 2)} ×"))
    md.append(table(["tenants", "1-task p50 ms", "p95", "p99", "p50 / 1 tenant"], rows))
    md.append(f"Idle background-worker CPU: {fmt(d.med('idle_cpu_pct_1'), 2)} % of a core at 1 tenant, "
              f"{fmt(d.med('idle_cpu_pct_n'), 2)} % at {n_tenants:,} tenants.\n")
    if d.values.get("backend_kib_n"):
        md.append(f"Memory of one backend after it read the tables of every tenant (`tenant_stats()`): "
                  f"{fmt(d.med('backend_kib_1') / 1024, 1)} MiB at 1 tenant, "
                  f"{fmt(d.med('backend_kib_n') / 1024, 1)} MiB at {n_tenants:,} tenants.\n")

    md.append("## 7. Fairness\n")
    md.append("Three trickling tenants each start 5 runs/s (`pgbench -R 5`, `bench/sql/trickle.sql`) while a "
              "flooding tenant has a backlog; wait = the task's claim time minus its run's creation time "
              "(both from the database clock). SQL tasks: 1-statement `SELECT 1` tasks for the tricklers, "
              "`pg_sleep(0.005)` tasks for the flood, all run by the background worker's pool "
              f"(`cloacina.sql_workers`). SDK: one process (`cloacina_bench workers`) with one runner per "
              "tenant, 4 handler threads each; the flood is a backlog of 1-task runs. Milliseconds.\n")
    rows = []
    for mode, label in (("sql", "SQL tasks"), ("sdk", "SDK runners")):
        for phase in ("unloaded", "flood"):
            name = f"fair_{mode}_{phase}"
            rows.append((label, phase, fmt(d.lat_pct(name, 50), 1), fmt(d.lat_pct(name, 95), 1),
                         fmt(d.lat_pct(name, 99), 1)))
    md.append(table(["workers", "phase", "p50", "p95", "p99"], rows))
    md.append(f"Flood runs still queued when the trickle ended (median): SQL {fmt(d.med('flood_left_sql'))}, "
              f"SDK {fmt(d.med('flood_left_sdk'))}; above zero means the flood lasted the whole measurement.\n")

    md.append("## Profile\n")
    md.append("Top statements by total execution time during the burn-downs and peer runs "
              "(`pg_stat_statements`, `track = all`, so nested statements of the plpgsql functions appear too):\n")
    spath = os.path.join(d.root, "profile", "statements.tsv")
    if os.path.exists(spath):
        rows = []
        with open(spath) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4:
                    rows.append((fmt(float(parts[0])), fmt(float(parts[1])), parts[2],
                                 "`" + parts[3].replace("|", "\\|").replace("`", "'") + "`"))
        md.append(table(["calls", "total ms", "mean ms", "statement"], rows))
    epath = os.path.join(d.root, "profile", "explain.txt")
    if os.path.exists(epath):
        with open(epath) as f:
            text = f.read()
        md.append("`EXPLAIN (ANALYZE, BUFFERS)` of the statements inside one `claim(…, 10)` and the "
                  "`complete_batch` of those 10 tasks (auto_explain with nested statements):\n")
        lines = text.splitlines()
        md.append("```\n" + "\n".join(lines[:160]) + ("\n… (truncated)" if len(lines) > 160 else "") + "\n```\n")

    md.append("## Plots\n")
    rel = os.path.relpath(args.plots, os.path.dirname(os.path.abspath(args.report)))
    for filename, title in made:
        md.append(f"![{title}]({rel}/{filename})\n")

    md.append("## How to reproduce\n")
    md.append("`sudo make bench` (full, this report) or `sudo make bench-smoke` (seconds-long versions of every "
              "scenario, writes `build/bench-smoke/`). Raw measurements stay in `build/bench/`. "
              "Sizes can be changed with `BENCH_REPS`, `BENCH_TENANTS`, `BENCH_BURN_RUNS`, `BENCH_DIAMOND_RUNS`, "
              "`BENCH_CHAIN_RUNS`, `BENCH_DBOS_RUNS`.\n")
    with open(args.report, "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
