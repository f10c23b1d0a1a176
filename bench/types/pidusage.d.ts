// pidusage 4 ships no type declarations; this is the part the benchmarks use.
declare module 'pidusage' {
  interface Stat {
    cpu: number;
    /** Resident set size, bytes. */
    memory: number;
    ppid: number;
    pid: number;
    /** User + system CPU time, ms. */
    ctime: number;
    elapsed: number;
    timestamp: number;
  }
  function pidusage(pid: number): Promise<Stat>;
  namespace pidusage {
    function clear(): void;
  }
  export default pidusage;
}
