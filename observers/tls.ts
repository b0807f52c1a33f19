import net from 'node:net';
import tls from 'node:tls';

/** The SSLRequest message: length 8, then the code 1234.5679 (protocol docs, "SSLRequest"). */
const SSL_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);

/**
 * The certificate a server hands its clients right now, as a client sees it: a TLS
 * handshake after Postgres's SSLRequest, closed before any startup packet, so no login is
 * attempted and nothing is logged. What Postgres serves is what counts: a renewed file it
 * has not reloaded yet still shows the old expiry here, and gets renewed again.
 */
export async function observeTls(host: string, port: number, timeoutMs = 2000): Promise<Record<string, string>> {
  try {
    const cert = await servedCertificate(host, port, timeoutMs);
    return {
      tls_offered: 'true',
      tls_cert_expires_at: new Date(cert.valid_to).toISOString(),
      tls_cert_serial: cert.serialNumber.toLowerCase(),
    };
  } catch (err) {
    if (err instanceof TlsNotOffered) return { tls_offered: 'false' };
    return { tls_error: (err as Error).message.slice(0, 300) };
  }
}

/** The server answered the SSLRequest with 'N': it runs without `ssl = on` (one made before pgfleet had TLS). */
export class TlsNotOffered extends Error {
  constructor() {
    super('the server does not offer TLS');
  }
}

export function servedCertificate(host: string, port: number, timeoutMs: number): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    let secure: tls.TLSSocket | undefined;
    const fail = (err: Error) => {
      secure?.destroy();
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () => fail(new Error(`no TLS handshake within ${timeoutMs} ms`)));
    socket.on('error', fail);
    socket.once('connect', () => socket.write(SSL_REQUEST));
    socket.once('data', (answer) => {
      if (answer[0] !== 0x53) return fail(new TlsNotOffered());
      // Any certificate is read: whether clients trust it is theirs to decide; its expiry is ours.
      secure = tls.connect({ socket, rejectUnauthorized: false, servername: net.isIP(host) ? undefined : host });
      secure.on('error', fail);
      secure.once('secureConnect', () => {
        const cert = secure!.getPeerCertificate();
        // end(), not destroy(): the client's last handshake message must still reach the
        // server, or Postgres logs "could not accept SSL connection: EOF detected" each time.
        secure!.end();
        if (!cert.valid_to) return reject(new Error('the server sent no certificate'));
        resolve(cert);
      });
    });
  });
}
