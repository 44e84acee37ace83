// node-postgres (`pg`) against a running Lookback (engine/tests/sql_drivers.rs runs this).
//
// Connects, creates a table with every Lookback type, inserts with bound parameters (the
// extended protocol), copies rows in and out (pg-copy-streams, the usual companion of `pg`),
// runs parametrized and named prepared queries, reads every type back with the right
// JavaScript value, and checks SQLSTATEs. Exits non-zero on the first mismatch.
'use strict';

const assert = require('node:assert/strict');
const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');
const { Client, types } = require('pg');
const copyStreams = require('pg-copy-streams');

// bigint as BigInt, not a lossy Number.
types.setTypeParser(20, (v) => BigInt(v));

async function main(port) {
  const client = new Client({ host: '127.0.0.1', port, user: 'lookback', database: 'lookback' });
  await client.connect();
  await client.query('DROP TABLE IF EXISTS js_types');
  await client.query('CREATE TABLE js_types (b boolean, i bigint, f double precision, t text NOT NULL, ts timestamptz, u uuid)');

  const ts1 = new Date(Date.UTC(2026, 10, 21, 10, 30, 15, 123));
  const u1 = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11';
  const inserted = await client.query(
    'INSERT INTO js_types (b, i, f, t, ts, u) VALUES ($1, $2, $3, $4, $5, $6)',
    [true, '9007199254740993', 2.5, 'héllo, wörld', ts1, u1],
  );
  assert.equal(inserted.rowCount, 1);

  const copyIn = client.query(copyStreams.from('COPY js_types (b, i, f, t, ts, u) FROM STDIN WITH (FORMAT csv)'));
  await pipeline(Readable.from(['f,-7,-0.125,"copied, ""quoted""",2026-01-02T03:04:05Z,\n', ',,,copied null,,\n']), copyIn);
  assert.equal(copyIn.rowCount, 2);

  let r = await client.query('SELECT b, i, f, t, ts, u FROM js_types WHERE t = $1', ['héllo, wörld']);
  assert.deepEqual(r.rows, [{ b: true, i: 9007199254740993n, f: 2.5, t: 'héllo, wörld', ts: ts1, u: u1 }]);
  r = await client.query('SELECT b, i, f, t, ts, u FROM js_types WHERE i < $1', [0]);
  assert.deepEqual(r.rows, [{ b: false, i: -7n, f: -0.125, t: 'copied, "quoted"', ts: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)), u: null }]);
  r = await client.query('SELECT count(*) AS n, count(b) AS nb FROM js_types');
  assert.deepEqual(r.rows, [{ n: 3n, nb: 2n }]);

  // A named prepared statement, run several times with different parameters.
  for (const [min, expected] of [[-10, 2n], [0, 1n], [10, 1n]]) {
    r = await client.query({ name: 'count_from', text: 'SELECT count(*) AS n FROM js_types WHERE i >= $1', values: [min] });
    assert.deepEqual(r.rows, [{ n: expected }]);
  }

  const chunks = [];
  await pipeline(
    client.query(copyStreams.to('COPY (SELECT t, i FROM js_types WHERE i IS NOT NULL ORDER BY i) TO STDOUT')),
    new Writable({ write(chunk, _enc, done) { chunks.push(chunk); done(); } }),
  );
  assert.equal(Buffer.concat(chunks).toString(), 'copied, "quoted"\t-7\nhéllo, wörld\t9007199254740993\n');

  for (const [sql, code] of [['SELECT * FROM no_such', '42P01'], ['SELECT no_col FROM js_types', '42703'], ['SELEC 1', '42601']]) {
    await assert.rejects(client.query(sql), (e) => e.code === code, sql);
  }
  // The connection is still usable after errors.
  r = await client.query('SELECT 1 AS one');
  assert.deepEqual(r.rows, [{ one: 1n }]);
  await client.query('DROP TABLE js_types');
  await client.end();
  console.log('node-postgres: ok');
}

main(Number(process.argv[2])).catch((e) => {
  console.error(e);
  process.exit(1);
});
