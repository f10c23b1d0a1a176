/**
 * `npm start` logs the progress of each moving campaign and a scheduler summary every 5 seconds. A
 * line whose figures have not moved since the last one is written at debug: an idle engine, or a
 * campaign waiting on a service that sends once a minute, does not print the same line to the
 * terminal twelve times a minute. The first line of each key, and every change, stay at info.
 */
export type RepeatLevel = (key: string, figures: unknown) => 'info' | 'debug';

export function createRepeatLevel(): RepeatLevel {
  const last = new Map<string, string>();
  return (key, figures) => {
    const text = JSON.stringify(figures);
    if (last.get(key) === text) return 'debug';
    last.set(key, text);
    return 'info';
  };
}
