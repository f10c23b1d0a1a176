/** BOUNCE_IMAP_URL, read apart from the poller so the configuration can check it without loading imapflow. */
export interface ImapTarget {
  host: string;
  port: number;
  secure: boolean;
  user: string;
  pass: string;
  mailbox: string;
}

/**
 * `imap://user:password@host[:port]/MAILBOX` (STARTTLS when offered, port 143) or `imaps://...`
 * (TLS, port 993). User and password are URL-encoded; the mailbox defaults to INBOX. The error
 * never repeats the URL (it holds a password).
 */
export function parseImapUrl(url: string): ImapTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error('BOUNCE_IMAP_URL is not a URL (imap[s]://user:password@host[:port]/MAILBOX)');
  }
  if (u.protocol !== 'imap:' && u.protocol !== 'imaps:') throw new Error('BOUNCE_IMAP_URL must start with imap:// or imaps://');
  if (!u.hostname) throw new Error('BOUNCE_IMAP_URL has no host');
  if (!u.username) throw new Error('BOUNCE_IMAP_URL has no user (imap[s]://user:password@host/MAILBOX)');
  const secure = u.protocol === 'imaps:';
  const mailbox = decodeURIComponent(u.pathname.replace(/^\//, '')) || 'INBOX';
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? Number(u.port) : secure ? 993 : 143,
    secure,
    user: decodeURIComponent(u.username),
    pass: decodeURIComponent(u.password),
    mailbox,
  };
}
