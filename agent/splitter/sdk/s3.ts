import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'

/** Uploads and downloads files on S3 or an S3-compatible store (seed: S3Manager). */
export class S3Manager {
  readonly client: S3Client
  lastError: string | null = null

  constructor (accessKeyId: string, secretAccessKey: string, regionName = 'us-east-1', opts: { endpoint?: string, forcePathStyle?: boolean } = {}) {
    this.client = new S3Client({
      region: regionName,
      credentials: { accessKeyId, secretAccessKey },
      // S3-compatible stores (s3rver, older MinIO, Ceph) do not all speak the aws-chunked uploads with
      // trailing checksums the SDK sends by default since 3.729 — they store the chunk framing as data.
      // With a custom endpoint, checksums are sent and checked only where the operation requires them.
      ...(opts.endpoint != null ? { endpoint: opts.endpoint, forcePathStyle: opts.forcePathStyle ?? true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' } : {})
    })
  }

  async uploadFile (filePath: string, bucketName: string, objectKey: string): Promise<boolean> {
    this.lastError = null
    try {
      const size = (await stat(filePath)).size
      await this.client.send(new PutObjectCommand({ Bucket: bucketName, Key: objectKey, Body: createReadStream(filePath), ContentLength: size }))
      return true
    } catch (err) {
      this.lastError = `upload of ${filePath} to s3://${bucketName}/${objectKey} failed: ${(err as Error).message}`
      return false
    }
  }

  async downloadFile (bucketName: string, objectKey: string, destinationPath: string): Promise<boolean> {
    this.lastError = null
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: bucketName, Key: objectKey }))
      await mkdir(dirname(destinationPath), { recursive: true })
      await pipeline(out.Body as Readable, createWriteStream(destinationPath))
      return true
    } catch (err) {
      this.lastError = `download of s3://${bucketName}/${objectKey} failed: ${(err as Error).message}`
      return false
    }
  }
}
