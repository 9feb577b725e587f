import { KubernetesJobRunner } from '/work/main/agent/tasks/k8s-runner.ts'
import { startFakeK8s } from '/work/main/test/fixtures/fake-k8s-api.ts'
const fake = await startFakeK8s()
const r = new KubernetesJobRunner({ kubeconfig: fake.kubeconfig })
const req = { taskId: 'task-1a2b3c', image: 'x/y:1', env: { TASK_ID: 'task-1a2b3c' } }
console.log(await r.start(req))
try { await r.start(req) } catch (e) { console.log((e as Error).message, (e as any).code, (e as any).status) }
const kc = fake.kubeconfig; kc.users[0].user.token = 'bad'
try { await new KubernetesJobRunner({ kubeconfig: kc }).start(req) } catch (e) { console.log((e as Error).message) }
try { await r.follow('nope', () => {}) } catch (e) { console.log((e as Error).message) }
try { new KubernetesJobRunner({ kubeconfig: { ...fake.kubeconfig, clusters: [] } }) } catch (e) { console.log((e as Error).message) }
try { await r.start({ ...req, storageSize: '1GB' }) } catch (e) { console.log((e as Error).message) }
await fake.close()
