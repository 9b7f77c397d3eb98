// bench/peers.js — drivers for the peers measured beside cloacina in bench/run: the job queues
// graphile-worker and pg-boss, and the durable-workflow library DBOS Transact, installed by
// bench/run into bench/.peers (never committed). No-op handlers, the same cluster.
//
//   node peers.js graphile-burndown  --url URL --jobs N --concurrency C [--series FILE]
//   node peers.js graphile-latency   --url URL --jobs N --out FILE
//   node peers.js pgboss-burndown    --url URL --jobs N --workers W --batch B [--series FILE]
//   node peers.js dbos-burndown      --url URL --workflows N --steps S --concurrency C --poll-ms P
//                                    [--series FILE]
//   node peers.js dbos-latency       --url URL --workflows N --steps S --out FILE
//
// Each prints one JSON object on stdout. Burn-downs enqueue everything first (timed apart), then
// start the workers and stop the clock when the last job is recorded as done in the database.
// The DBOS commands take the URL of DBOS's own system database (not cloacina's).
"use strict";
const fs = require("fs");
const path = require("path");
const { createRequire } = require("module");

const peersDir = process.env.PEERS_DIR || path.join(__dirname, ".peers");
const peerRequire = createRequire(path.join(peersDir, "package.json"));

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i + 1 < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`expected --key value, got ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nowSeconds = () => Number(process.hrtime.bigint()) / 1e9;

// Counts handler invocations per second while a burn-down runs.
function seriesRecorder(file) {
  const counts = [];
  let current = 0;
  const timer = setInterval(() => {
    counts.push(current);
    current = 0;
  }, 1000);
  return {
    tick() { current += 1; },
    stop() {
      clearInterval(timer);
      if (file) fs.writeFileSync(file, counts.map((n, i) => `${i + 1}\t${n}\n`).join(""));
    },
  };
}

// Polls `sql` (a count of unfinished jobs) until it returns 0.
async function waitUntilDrained(pool, sql, limitSeconds) {
  const start = nowSeconds();
  for (;;) {
    const { rows } = await pool.query(sql);
    if (Number(rows[0].n) === 0) return;
    if (nowSeconds() - start > limitSeconds) throw new Error("the queue did not drain in time");
    await sleep(20);
  }
}

// graphile-worker logs every job by default; that is not what is measured here.
function quietLogger() {
  const { Logger } = peerRequire("graphile-worker");
  return new Logger(() => (level, message) => { if (level === "error") console.error(message); });
}

async function graphileBurndown(args) {
  const { run, makeWorkerUtils } = peerRequire("graphile-worker");
  const { Pool } = peerRequire("pg");
  const jobs = Number(args.jobs);
  const concurrency = Number(args.concurrency || 16);
  const utils = await makeWorkerUtils({ connectionString: args.url, logger: quietLogger() });
  await utils.migrate();
  const pool = new Pool({ connectionString: args.url, max: 2 });
  await pool.query("DELETE FROM graphile_worker._private_jobs");

  const submitStart = nowSeconds();
  for (let done = 0; done < jobs; done += 1000) {
    const n = Math.min(1000, jobs - done);
    await utils.addJobs(Array.from({ length: n }, () => ({ identifier: "noop", payload: {} })));
  }
  const submitSeconds = nowSeconds() - submitStart;

  const series = seriesRecorder(args.series);
  let handled = 0;
  let allHandled;
  const handledPromise = new Promise((resolve) => { allHandled = resolve; });
  const start = nowSeconds();
  // The settings of graphile-worker's own performance test: a local queue that fetches jobs in
  // batches, and batched completion.
  const runner = await run({
    connectionString: args.url,
    concurrency,
    maxPoolSize: concurrency + 2,
    noHandleSignals: true,
    pollInterval: 1000,
    crontab: "",
    logger: quietLogger(),
    preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    taskList: {
      noop: async () => {
        series.tick();
        if (++handled === jobs) allHandled();
      },
    },
  });
  await handledPromise;
  await waitUntilDrained(pool, "SELECT count(*) AS n FROM graphile_worker._private_jobs", 600);
  const seconds = nowSeconds() - start;
  series.stop();
  await runner.stop();
  await utils.release();
  await pool.end();
  return { jobs, seconds, jobs_per_s: jobs / seconds, submit_seconds: submitSeconds, submit_per_s: jobs / submitSeconds };
}

async function graphileLatency(args) {
  const { run, makeWorkerUtils } = peerRequire("graphile-worker");
  const jobs = Number(args.jobs);
  const utils = await makeWorkerUtils({ connectionString: args.url, logger: quietLogger() });
  await utils.migrate();
  let started = null;
  // Default worker settings (graphile-worker's latency test): LISTEN/NOTIFY wakes the idle worker.
  const runner = await run({
    connectionString: args.url,
    concurrency: 1,
    noHandleSignals: true,
    crontab: "",
    logger: quietLogger(),
    taskList: { latency: async () => { if (started) started(nowSeconds()); } },
  });
  const micros = [];
  const once = async () => {
    const handlerStarted = new Promise((resolve) => { started = resolve; });
    const t0 = nowSeconds();
    await utils.addJob("latency", {});
    const t1 = await handlerStarted;
    return (t1 - t0) * 1e6;
  };
  for (let i = 0; i < 20; i++) await once();  // warm-up
  await sleep(300);
  for (let i = 0; i < jobs; i++) micros.push(await once());
  fs.writeFileSync(args.out, micros.map((m) => `${m}\n`).join(""));
  await runner.stop();
  await utils.release();
  micros.sort((a, b) => a - b);
  return { jobs, p50_us: micros[Math.floor(micros.length / 2)] };
}

async function pgbossBurndown(args) {
  const PgBoss = peerRequire("pg-boss");
  const { Pool } = peerRequire("pg");
  const jobs = Number(args.jobs);
  const workers = Number(args.workers || 4);
  const batch = Number(args.batch || 250);
  const boss = new PgBoss({ connectionString: args.url, max: workers + 4, supervise: false, schedule: false });
  boss.on("error", (e) => console.error("pg-boss:", e.message));
  await boss.start();
  const queue = "bench_noop";
  await boss.createQueue(queue).catch(() => {});
  const pool = new Pool({ connectionString: args.url, max: 2 });
  await pool.query("DELETE FROM pgboss.job WHERE name = $1", [queue]);

  const submitStart = nowSeconds();
  for (let done = 0; done < jobs; done += 1000) {
    const n = Math.min(1000, jobs - done);
    await boss.insert(Array.from({ length: n }, () => ({ name: queue, data: {} })));
  }
  const submitSeconds = nowSeconds() - submitStart;

  const series = seriesRecorder(args.series);
  const start = nowSeconds();
  // Large fetch batches: each worker fetches `batch` jobs and completes them together.
  for (let i = 0; i < workers; i++) {
    await boss.work(queue, { batchSize: batch, pollingIntervalSeconds: 0.5 }, async (batchJobs) => {
      for (let j = 0; j < batchJobs.length; j++) series.tick();
    });
  }
  await waitUntilDrained(pool,
    `SELECT count(*) AS n FROM pgboss.job WHERE name = '${queue}' AND state <> 'completed'`, 900);
  const seconds = nowSeconds() - start;
  series.stop();
  await boss.stop({ graceful: false, wait: true });
  await pool.end();
  return { jobs, seconds, jobs_per_s: jobs / seconds, submit_seconds: submitSeconds, submit_per_s: jobs / submitSeconds };
}

// ---- DBOS Transact ------------------------------------------------------------------------
const dbosApp = "cloacina-bench";
const dbosQueue = "bench_queue";

// Registers the workflow of S no-op steps (each checkpointed: DBOS.runStep records its output in
// the system database before the next step starts) and configures DBOS; before DBOS.launch.
function dbosWorkflow(args, onStart) {
  const { DBOS } = peerRequire("@dbos-inc/dbos-sdk");
  // DBOS logs with console.log (migrations, queues), whatever the log level; stdout is the result's.
  console.log = console.info = console.debug = console.error;
  const steps = Number(args.steps || 3);
  const noop = async () => {};
  DBOS.setConfig({ name: dbosApp, systemDatabaseUrl: args.url, logLevel: "error" });
  const name = `bench_steps${steps}`;
  const workflow = DBOS.registerWorkflow(async () => {
    if (onStart) onStart();
    for (let i = 0; i < steps; i++) await DBOS.runStep(noop, { name: `s${i}` });
  }, { name });
  return { DBOS, workflow, name, steps };
}

async function dbosBurndown(args) {
  const { DBOSClient } = peerRequire("@dbos-inc/dbos-sdk");
  const { Pool } = peerRequire("pg");
  const workflows = Number(args.workflows);
  const concurrency = Number(args.concurrency || 16);
  const series = seriesRecorder(args.series);
  let start = null;
  // The clock starts at the first dequeue: the first workflow body to run.
  const { DBOS, name, steps } = dbosWorkflow(args, () => { start ??= nowSeconds(); series.tick(); });
  await DBOS.migrate(args.url);
  const pool = new Pool({ connectionString: args.url, max: 2 });
  // Start empty: the runs of an earlier repetition (their step outputs are not cascaded).
  await pool.query(`TRUNCATE dbos.workflow_status, dbos.operation_outputs, dbos.workflow_input,
                    dbos.workflow_output, dbos.workflow_events, dbos.workflow_events_history CASCADE`);

  // Enqueue with a client before this process launches DBOS, so nothing is dequeued meanwhile;
  // 16 enqueues in flight (one round trip each: DBOS has no batch enqueue).
  const client = await DBOSClient.create({ systemDatabaseUrl: args.url, applicationName: dbosApp });
  await client.registerQueue(dbosQueue, {
    workerConcurrency: concurrency,
    minPollingIntervalMs: Number(args["poll-ms"] || 1000),
    onConflict: "always_update",
  });
  const submitStart = nowSeconds();
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < workflows) {
      next += 1;
      await client.enqueue({ queueName: dbosQueue, workflowName: name });
    }
  }));
  const submitSeconds = nowSeconds() - submitStart;
  await client.destroy();

  await DBOS.launch();
  await waitUntilDrained(pool,
    "SELECT count(*) AS n FROM dbos.workflow_status WHERE status IN ('ENQUEUED', 'PENDING')", 1800);
  const seconds = nowSeconds() - start;
  series.stop();
  await DBOS.shutdown();
  // Every run must have succeeded with its S steps checkpointed.
  const { rows } = await pool.query(
    `SELECT (SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS') AS ok,
            (SELECT count(*) FROM dbos.operation_outputs) AS checkpoints`);
  await pool.end();
  const { ok, checkpoints } = rows[0];
  if (Number(ok) !== workflows || Number(checkpoints) !== workflows * steps)
    throw new Error(`expected ${workflows} successes, ${workflows * steps} checkpoints; got ${ok}, ${checkpoints}`);
  return { workflows, steps, seconds, workflows_per_s: workflows / seconds, steps_per_s: workflows * steps / seconds,
           submit_seconds: submitSeconds, submit_per_s: workflows / submitSeconds };
}

// Start a workflow in this process and await its result, sequentially.
async function dbosLatency(args) {
  const workflows = Number(args.workflows);
  const { DBOS, workflow } = dbosWorkflow(args);
  await DBOS.launch();
  const once = async () => {
    const t0 = nowSeconds();
    const handle = await DBOS.startWorkflow(workflow)();
    await handle.getResult();
    return (nowSeconds() - t0) * 1e6;
  };
  for (let i = 0; i < 20; i++) await once();  // warm-up
  await sleep(300);
  const micros = [];
  for (let i = 0; i < workflows; i++) micros.push(await once());
  fs.writeFileSync(args.out, micros.map((m) => `${m}\n`).join(""));
  await DBOS.shutdown();
  micros.sort((a, b) => a - b);
  return { workflows, p50_us: micros[Math.floor(micros.length / 2)] };
}

const commands = {
  "graphile-burndown": graphileBurndown,
  "graphile-latency": graphileLatency,
  "pgboss-burndown": pgbossBurndown,
  "dbos-burndown": dbosBurndown,
  "dbos-latency": dbosLatency,
};

const [command, ...rest] = process.argv.slice(2);
if (!commands[command]) {
  console.error(`usage: node peers.js ${Object.keys(commands).join("|")} --key value ...`);
  process.exit(2);
}
commands[command](parseArgs(rest)).then(
  (result) => { process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0)); },
  (error) => { console.error(`peers.js ${command}: ${error.stack || error}`); process.exit(1); });
