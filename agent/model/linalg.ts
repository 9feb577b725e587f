/**
 * Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.
 * Small, dependency-free and deterministic (fixed sweep order).
 * Returns eigenvalues in descending order and eigenvectors as columns.
 */
export function symmetricEigen (a: Float64Array, n: number, maxSweeps = 30): { values: Float64Array, vectors: Float64Array } {
  const m = Float64Array.from(a)
  const v = new Float64Array(n * n)
  for (let i = 0; i < n; i++) v[i * n + i] = 1
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q] * m[p * n + q]
    if (off < 1e-22) break
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q]
        if (Math.abs(apq) < 1e-300) continue
        const app = m[p * n + p]
        const aqq = m[q * n + q]
        const theta = (aqq - app) / (2 * apq)
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1))
        const c = 1 / Math.sqrt(t * t + 1)
        const s = t * c
        for (let k = 0; k < n; k++) {
          const mkp = m[k * n + p]
          const mkq = m[k * n + q]
          m[k * n + p] = c * mkp - s * mkq
          m[k * n + q] = s * mkp + c * mkq
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p * n + k]
          const mqk = m[q * n + k]
          m[p * n + k] = c * mpk - s * mqk
          m[q * n + k] = s * mpk + c * mqk
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]
          const vkq = v[k * n + q]
          v[k * n + p] = c * vkp - s * vkq
          v[k * n + q] = s * vkp + c * vkq
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => m[j * n + j] - m[i * n + i] || i - j)
  const values = new Float64Array(n)
  const vectors = new Float64Array(n * n)
  order.forEach((src, dst) => {
    values[dst] = m[src * n + src]
    for (let k = 0; k < n; k++) vectors[k * n + dst] = v[k * n + src]
  })
  return { values, vectors }
}

/** Orthonormal vectors in R^dim, each orthogonal to the all-ones vector (Gram-Schmidt on `draw()`). */
export function orthonormalBasisWithoutMean (count: number, dim: number, draw: () => number): Float64Array[] {
  if (count > dim - 1) throw new Error(`cannot fit ${count} vectors orthogonal to the mean in ${dim} dimensions`)
  const basis: Float64Array[] = []
  while (basis.length < count) {
    const x = new Float64Array(dim)
    for (let i = 0; i < dim; i++) x[i] = draw()
    for (let pass = 0; pass < 2; pass++) {
      let mean = 0
      for (let i = 0; i < dim; i++) mean += x[i]
      mean /= dim
      for (let i = 0; i < dim; i++) x[i] -= mean
      for (const b of basis) {
        let d = 0
        for (let i = 0; i < dim; i++) d += x[i] * b[i]
        for (let i = 0; i < dim; i++) x[i] -= d * b[i]
      }
    }
    let norm = 0
    for (let i = 0; i < dim; i++) norm += x[i] * x[i]
    norm = Math.sqrt(norm)
    if (norm < 1e-6) continue
    for (let i = 0; i < dim; i++) x[i] /= norm
    basis.push(x)
  }
  return basis
}
