import { hostname } from 'node:os'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { InvalidArgumentError, Option } from 'commander'
import type { Command } from 'commander'
import { Agent } from '../../daemon.ts'
import { flushLogger } from '../../log.ts'
import { collect, intArg, sizeArg } from '../args.ts'
import { PYTHON_PREFIX } from '../../python/envs.ts'

export function registerAgentCommand (program: Command): void {
  program.command('agent')
    .description('run the agent daemon: join the mesh, gossip capacity, serve the HTTP API')
    .option('--name <name>', 'node name shown to peers', hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'node')
    .option('--cluster <label>', 'cluster this node belongs to', 'default')
    .option('--vendor <name>', 'provider of this node\'s capacity (used by cluster policies)', '')
    .option('--listen <multiaddr>', 'libp2p listen address (repeat or comma-separate)', collect)
    .option('--bootstrap <multiaddr>', 'peer to dial at start and keep dialling (repeat or comma-separate)', collect)
    .option('--api-host <host>', 'HTTP API bind address', '127.0.0.1')
    .option('--api-port <port>', 'HTTP API port (0: any free port)', intArg(0, 65535), 7700)
    .option('--data-dir <dir>', 'state directory (identity, token, agent.db)')
    .option('--swarm-key <file>', 'private network key file (libp2p pnet); only nodes with the same key connect')
    .option('--allow <peerId>', 'only these peers may connect (repeat or comma-separate)', collect)
    .option('--heartbeat-ms <ms>', 'capacity gossip interval', intArg(250, 60_000), 2000)
    .option('--simulate-gpus <spec>', 'declare simulated GPUs, e.g. "count=2,model=A100,memory=80GiB,free=60GiB,util=10"')
    .option('--allow-simulated-gpus', 'place blocks on simulated GPUs (yours and peers\' --simulate-gpus) as if they were real; without it they are ignored for placement')
    .option('--max-model-bytes <size>', 'refuse model files larger than this (e.g. 64GiB)', sizeArg, 64 * 1024 ** 3)
    .option('--content-cap <size>', 'keep at most this much in the content store (model files for blocks and peers; unpinned files no block uses are evicted, least recently used first)', sizeArg, 128 * 1024 ** 3)
    .option('--content-upload-rate <size>', 'upload model files to peers at most this fast, per second (e.g. 50MiB; 0: no limit)', sizeArg, 0)
    .option('--accept-remote-processes', 'run blocks with external systems or init processes when peers place them (they run commands and reach URLs of the owner\'s choosing)')
    .option('--kubeconfig <file>', 'run split tasks as Kubernetes Jobs in this cluster (when container_image is not a local splitter program)')
    .option('--k8s-namespace <ns>', 'namespace for split Jobs (default: the kubeconfig context\'s)')
    .option('--public-api-url <url>', 'this agent\'s API as split Jobs in the cluster reach it')
    .option('--splitter <name=path>', 'register a splitter program for the local runner: container_image NAME runs PATH (.ts/.mjs/.js or an executable), or python:PATH.py / python:MODULE (the Python SDK, in a virtual environment of its own; repeatable)', splitterArg)
    .option('--inference-threads <n>', 'ONNX Runtime threads per model (0: let it decide)', intArg(0, 1024), 0)
    .option('--migration-max <n>', 'resume a request whose instance or vDAG stage dies at most this many times', intArg(0, 100), 3)
    .option('--migration-max-tokens <n>', 'longest replay (prompt + tokens generated so far) a migration may send', intArg(1, 1 << 20), 8192)
    .option('--migration-wait-ms <ms>', 'how long a migrating request waits for another instance or a stage\'s replacement', intArg(0, 3_600_000), 60_000)
    .addOption(new Option('--vdag-driver <where>', 'drive vDAG requests that arrive here on the host of the vDAG\'s first stage (each token crosses one link fewer) or here').choices(['first-stage', 'here']).default('first-stage'))
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent', 'info')
    .action(async (opts: Record<string, unknown>) => {
      const agent = await Agent.start({
        name: opts.name as string,
        cluster: opts.cluster as string,
        vendor: opts.vendor as string,
        listen: opts.listen as string[] | undefined,
        bootstrap: opts.bootstrap as string[] | undefined,
        apiHost: opts.apiHost as string,
        apiPort: opts.apiPort as number,
        dataDir: opts.dataDir as string | undefined,
        swarmKey: opts.swarmKey as string | undefined,
        allow: opts.allow as string[] | undefined,
        heartbeatMs: opts.heartbeatMs as number,
        simulateGpus: opts.simulateGpus as string | undefined,
        allowSimulatedGpus: opts.allowSimulatedGpus === true,
        maxModelBytes: opts.maxModelBytes as number,
        contentCapBytes: opts.contentCap as number,
        contentUploadRate: opts.contentUploadRate as number,
        inferenceThreads: opts.inferenceThreads as number,
        acceptRemoteProcesses: opts.acceptRemoteProcesses === true,
        kubeconfig: opts.kubeconfig as string | undefined,
        k8sNamespace: opts.k8sNamespace as string | undefined,
        publicApiUrl: opts.publicApiUrl as string | undefined,
        splitters: opts.splitter as Record<string, string> | undefined,
        migrationMax: opts.migrationMax as number,
        migrationMaxTokens: opts.migrationMaxTokens as number,
        migrationWaitMs: opts.migrationWaitMs as number,
        vdagDriver: opts.vdagDriver as 'first-stage' | 'here',
        logLevel: opts.logLevel as 'info'
      })
      const info = agent.info()
      process.stderr.write(`blockmesh agent ${info.name} ready: api ${info.apiUrl}  peer ${info.peerId}  token file ${agent.options.dataDir}/api-token\n`)

      let exiting = false
      const shutdown = (why: string): void => {
        if (exiting) return
        exiting = true
        agent.log.info({ why }, 'shutting down')
        const force = setTimeout(() => { process.exit(1) }, 15_000)
        force.unref()
        void agent.stop().finally(async () => {
          await flushLogger(agent.log)
          process.exit(0)
        })
      }
      process.on('SIGINT', () => { shutdown('SIGINT') })
      process.on('SIGTERM', () => { shutdown('SIGTERM') })
      // started by a supervisor (the demo) over IPC: leave with it, never orphaned
      if (process.send != null) process.on('disconnect', () => { shutdown('parent gone') })
      process.on('unhandledRejection', (err) => { agent.log.error({ err }, 'unhandled rejection (kept running)') })
    })
}

/**
 * --splitter NAME=PATH (repeatable) → { NAME: absolute PATH }; the file must exist. NAME=python:PATH.py (a
 * Python script, run in a virtual environment with the SDK and its folder's requirements.txt) or
 * NAME=python:MODULE (run with -m) register Python splitters.
 */
function splitterArg (pair: string, previous: Record<string, string> = {}): Record<string, string> {
  const i = pair.indexOf('=')
  if (i <= 0 || i === pair.length - 1) throw new InvalidArgumentError(`expected NAME=PATH or NAME=python:PATH.py|MODULE, got ${JSON.stringify(pair)}`)
  const name = pair.slice(0, i)
  let target = pair.slice(i + 1)
  const python = target.startsWith(PYTHON_PREFIX)
  if (python) target = target.slice(PYTHON_PREFIX.length)
  if (python && !target.endsWith('.py') && !target.includes('/')) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(target)) throw new InvalidArgumentError(`${name}: ${JSON.stringify(target)} is neither a .py file nor a module name`)
    return { ...previous, [name]: `${PYTHON_PREFIX}${target}` }
  }
  const path = resolve(target)
  if (!existsSync(path)) throw new InvalidArgumentError(`${name}: no such file ${path}`)
  return { ...previous, [name]: python ? `${PYTHON_PREFIX}${path}` : path }
}
