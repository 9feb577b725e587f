import type { FastifyInstance } from 'fastify'
import { z } from 'zod'
import type { ApiContext } from '../context.ts'
import { SimulatedGpuListSchema, parseSimulatedGpus } from '../../hardware/gpus.ts'
import { parseWith } from '../validate.ts'
import type { Readings } from '../../../contracts/api.ts'

const SimulatedBody = z.union([
  z.object({ gpus: SimulatedGpuListSchema }).strict(),
  z.object({ spec: z.string().max(4096) }).strict()
])

export function registerHardwareRoutes (app: FastifyInstance, ctx: ApiContext): void {
  app.get('/api/hardware', async (): Promise<Readings> => ctx.hardware.readings())

  app.get('/api/hardware/simulated-gpus', async () => ({ gpus: ctx.hardware.simulatedGpus() }))

  /** Replaces the declared (simulated) GPUs and publishes a heartbeat at once. */
  app.put('/api/hardware/simulated-gpus', async (req) => {
    const body = parseWith(SimulatedBody, req.body)
    const gpus = 'gpus' in body ? body.gpus : parseSimulatedGpus(body.spec)
    ctx.hardware.setSimulatedGpus(gpus)
    const record = await ctx.gossip.publishNow()
    ctx.log.info({ gpus: gpus.length }, 'simulated GPUs replaced')
    return { gpus, publishedSeq: record?.seq ?? null }
  })
}
