/**
 * Items in ascending order of a unique numeric key, in chunks of load / 2 to
 * 2 x load (a chunked sorted array, as Python's sortedcontainers). Insert and
 * delete cost a binary search and a move within one chunk; `after` costs a
 * binary search plus the items it returns; `countAfter` adds up the lengths
 * of the chunks before the position, about n / load additions.
 */
export class SortedList<T> {
  private readonly chunks: T[][] = [];
  /** the key of each chunk's last item, for the binary search over chunks */
  private readonly lastKeys: number[] = [];
  private count = 0;

  /** `load`: about the length of each half of a split chunk (tests pass small ones, to split and merge often) */
  constructor(
    private readonly keyOf: (item: T) => number,
    private readonly load = 512,
  ) {}

  get size(): number {
    return this.count;
  }

  /** Adds an item whose key is not in the list yet. */
  insert(item: T): void {
    const key = this.keyOf(item);
    if (this.chunks.length === 0) {
      this.chunks.push([item]);
      this.lastKeys.push(key);
    } else {
      // A key beyond every chunk's last goes at the end of the last chunk.
      const { chunk: found, index } = this.locate((k) => k < key);
      const c = Math.min(found, this.chunks.length - 1);
      const chunk = this.chunks[c]!;
      const at = found === c ? index : chunk.length;
      // Most items go at the end (submission order): push, not a splice that makes an array of what it removed.
      if (at === chunk.length) chunk.push(item);
      else chunk.splice(at, 0, item);
      this.lastKeys[c] = this.keyOf(chunk.at(-1)!);
      if (chunk.length > 2 * this.load) this.split(c);
    }
    this.count++;
  }

  /** Removes the item with the key of `item`; false when there is none. */
  delete(item: T): boolean {
    const key = this.keyOf(item);
    const { chunk: c, index: i } = this.locate((k) => k < key);
    const chunk = this.chunks[c];
    if (!chunk || this.keyOf(chunk[i]!) !== key) return false;
    // Most deletes take the first item (the oldest queued task starts): shift moves the array's start, splice its items.
    if (i === 0) chunk.shift();
    else chunk.splice(i, 1);
    this.count--;
    if (chunk.length === 0) {
      this.chunks.splice(c, 1);
      this.lastKeys.splice(c, 1);
    } else {
      this.lastKeys[c] = this.keyOf(chunk.at(-1)!);
      if (chunk.length < this.load / 2 && this.chunks.length > 1) this.merge(c);
    }
    return true;
  }

  /** Up to `limit` items with a key greater than `key` (all items when `key` is undefined), in order. */
  after(key: number | undefined, limit: number): T[] {
    const items: T[] = [];
    let { chunk: c, index: i } = this.positionAfter(key);
    for (; c < this.chunks.length && items.length < limit; c++, i = 0) {
      const chunk = this.chunks[c]!;
      items.push(...chunk.slice(i, i + limit - items.length));
    }
    return items;
  }

  /** The number of items with a key greater than `key` (all items when `key` is undefined). */
  countAfter(key: number | undefined): number {
    return this.count - this.rank(this.positionAfter(key));
  }

  /** Up to `limit` items with a key less than `key` (all items when `key` is undefined), in reverse order. */
  before(key: number | undefined, limit: number): T[] {
    const items: T[] = [];
    let { chunk: c, index: i } = this.positionBefore(key);
    while (items.length < limit) {
      if (i === 0) {
        if (--c < 0) break;
        i = this.chunks[c]!.length;
        continue;
      }
      items.push(this.chunks[c]![--i]!);
    }
    return items;
  }

  /** The number of items with a key less than `key` (all items when `key` is undefined). */
  countBefore(key: number | undefined): number {
    return this.rank(this.positionBefore(key));
  }

  /** How many items come before a position. */
  private rank({ chunk: c, index: i }: { chunk: number; index: number }): number {
    let before = i;
    for (let j = 0; j < c; j++) before += this.chunks[j]!.length;
    return before;
  }

  /** Where the first item with a key not less than `key` is, or would be (past the end when `key` is undefined). */
  private positionBefore(key: number | undefined): { chunk: number; index: number } {
    return key === undefined ? { chunk: this.chunks.length, index: 0 } : this.locate((k) => k < key);
  }

  /** Where the first item with a key greater than `key` is, or would be. */
  private positionAfter(key: number | undefined): { chunk: number; index: number } {
    return key === undefined ? { chunk: 0, index: 0 } : this.locate((k) => k <= key);
  }

  /** The first item whose key `before` is false for (true for a prefix of the keys, false for the rest). */
  private locate(before: (key: number) => boolean): { chunk: number; index: number } {
    const chunk = lowerBound(this.lastKeys.length, (c) => before(this.lastKeys[c]!));
    const items = this.chunks[chunk];
    return { chunk, index: items ? lowerBound(items.length, (i) => before(this.keyOf(items[i]!))) : 0 };
  }

  private split(c: number): void {
    const chunk = this.chunks[c]!;
    const second = chunk.splice(chunk.length >> 1);
    this.chunks.splice(c + 1, 0, second);
    this.lastKeys.splice(c, 0, this.keyOf(chunk.at(-1)!));
  }

  /** Joins a chunk that has become small with a neighbour, so that chunks stay few. */
  private merge(c: number): void {
    const first = c > 0 ? c - 1 : c;
    const joined = this.chunks[first]!.concat(this.chunks[first + 1]!);
    this.chunks.splice(first, 2, joined);
    this.lastKeys.splice(first, 1);
    if (joined.length > 2 * this.load) this.split(first);
  }
}

/** The first index in 0..length for which `before` is false; `before` must be true up to some index and false after. */
function lowerBound(length: number, before: (i: number) => boolean): number {
  let low = 0;
  let high = length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (before(middle)) low = middle + 1;
    else high = middle;
  }
  return low;
}
