// bench/peers.js — drivers for the peer job queues measured beside cloacina in bench/run:
// graphile-worker and pg-boss, installed by bench/run into bench/.peers (never committed).
// No-op handlers, the same cluster and the same job count as cloacina's burn-down.
//
//   node peers.js graphile-burndown  --url URL --jobs N --concurrency C [--series FILE]
//   node peers.js graphile-latency   --url URL --jobs N --out FILE
//   node peers.js pgboss-burndown    --url URL --jobs N --workers W --batch B [--series FILE]
//
// Each prints one JSON object on stdout. Burn-downs enqueue everything first (timed apart), then
// start the workers and stop the clock when the last job is recorded as done in the database.
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

const commands = {
  "graphile-burndown": graphileBurndown,
  "graphile-latency": graphileLatency,
  "pgboss-burndown": pgbossBurndown,
};

const [command, ...rest] = process.argv.slice(2);
if (!commands[command]) {
  console.error(`usage: node peers.js ${Object.keys(commands).join("|")} --key value ...`);
  process.exit(2);
}
commands[command](parseArgs(rest)).then(
  (result) => { console.log(JSON.stringify(result)); process.exit(0); },
  (error) => { console.error(`peers.js ${command}: ${error.stack || error}`); process.exit(1); });
