/**
 * Schema migrations, applied in order, each once, inside a transaction.
 * Append new entries; never edit one that has shipped.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'meta and peers',
    sql: `
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;
      CREATE TABLE peers (
        peer_id   TEXT PRIMARY KEY,
        name      TEXT NOT NULL,
        cluster   TEXT NOT NULL,
        record    TEXT NOT NULL,
        last_seen INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX peers_last_seen ON peers (last_seen);
    `
  },
  {
    version: 2,
    name: 'components and blocks',
    sql: `
      CREATE TABLE components (
        uri        TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        version    TEXT NOT NULL,
        spec       TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE blocks (
        id            TEXT PRIMARY KEY,
        component_uri TEXT NOT NULL REFERENCES components (uri),
        spec          TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('pending', 'loading', 'ready', 'failed')),
        error         TEXT,
        runtime       TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX blocks_component ON blocks (component_uri);
    `
  },
  {
    version: 3,
    name: 'instances across the mesh',
    sql: `
      -- owner side: the instances this agent placed for its blocks
      CREATE TABLE block_instances (
        instance_id TEXT PRIMARY KEY,
        block_id    TEXT NOT NULL REFERENCES blocks (id) ON DELETE CASCADE,
        peer_id     TEXT NOT NULL,
        peer_name   TEXT NOT NULL,
        status      TEXT NOT NULL,
        error       TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX block_instances_block ON block_instances (block_id);
      -- desired instance count (null: the block's minInstances)
      ALTER TABLE blocks ADD COLUMN target INTEGER;
      -- host side: instances this agent runs, whoever owns them
      CREATE TABLE hosted (
        block_id    TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        owner       TEXT NOT NULL,
        spec        TEXT NOT NULL,
        component   TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('pending', 'loading', 'ready', 'failed')),
        error       TEXT,
        runtime     TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
      ) STRICT;
    `
  },
  {
    version: 4,
    name: 'model splitting: tasks, split runners, model layers, vDAGs',
    sql: `
      -- tracked tasks (type model_splits): the document is the task as the API shows it
      CREATE TABLE tasks (
        id         TEXT PRIMARY KEY,
        type       TEXT NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('pending', 'running', 'complete', 'failed')),
        doc        TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX tasks_status ON tasks (status);
      -- seed 002: split runners registry (documents queried with Mongo-style filters)
      CREATE TABLE split_runners (
        id         TEXT PRIMARY KEY,
        doc        TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      -- seed 002: model layers registry, keyed by the MD5 of the serialized layer
      CREATE TABLE model_layers (
        hash       TEXT PRIMARY KEY,
        doc        TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;
      -- vDAGs owned by this agent
      CREATE TABLE vdags (
        name       TEXT PRIMARY KEY,
        spec       TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
    `
  },
  {
    version: 5,
    name: 'replicated desired state (issue 13)',
    sql: `
      -- the signed Automerge changes of the mesh's desired state (components, blocks, vDAGs, split plans),
      -- every writer's: an agent rebuilds the document from them at start and serves them to peers
      CREATE TABLE state_changes (
        hash        TEXT PRIMARY KEY,
        actor       TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        writer      TEXT NOT NULL,
        frame       BLOB NOT NULL,
        received_at INTEGER NOT NULL,
        UNIQUE (actor, seq)
      ) STRICT;
      -- host side: the fence of the reconciler that placed an instance (orders from lower terms are refused)
      ALTER TABLE hosted ADD COLUMN term INTEGER NOT NULL DEFAULT 0;
    `
  },
  {
    version: 6,
    name: 'content store (issue 15)',
    sql: `
      -- model files held by this agent, addressed by MD5: complete (<content>/<md5>) or partial
      -- (<content>/<md5>.part, the chunks held in bitmap, bit i of byte i>>3 is i & 7), with the adder's
      -- signed manifest (the envelope bytes, forwarded as is)
      CREATE TABLE content_files (
        md5        TEXT PRIMARY KEY,
        sha256     TEXT NOT NULL,
        size       INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        chunks     INTEGER NOT NULL,
        bitmap     BLOB NOT NULL,
        manifest   BLOB NOT NULL,
        name       TEXT,
        state      TEXT NOT NULL CHECK (state IN ('complete', 'partial')),
        pinned     INTEGER NOT NULL CHECK (pinned IN (0, 1)),
        last_used  INTEGER NOT NULL,
        added_at   INTEGER NOT NULL
      ) STRICT;
    `
  }
]
