/**
 * Contours of binary masks and polygon geometry, with OpenCV's semantics so tissue
 * segmentation reproduces CLAM (which calls cv2.findContours, cv2.contourArea,
 * cv2.boundingRect and cv2.pointPolygonTest):
 *
 * - `findContours`: Suzuki & Abe, "Topological structural analysis of digitized binary
 *   images by border following", CVGIP 30(1), 1985 — Algorithm 1 (border following
 *   with NBD/LNBD labels, 8-connected foreground, 4-connected background), with
 *   OpenCV's conventions: `RETR_CCOMP` hierarchy (outer borders at the top level,
 *   hole borders as their children), `CHAIN_APPROX_NONE` (every border pixel), the
 *   image treated as framed by zeros, and OpenCV's output order (top-level contours
 *   last-found first, each followed by its holes, last-found first).
 * - `contourArea`: the shoelace formula, absolute value (cv2.contourArea, oriented=false).
 * - `boundingRect`: [minX, minY, maxX − minX + 1, maxY − minY + 1] (cv2.boundingRect on points).
 * - `pointPolygonTest`: +1 inside, 0 on an edge or vertex, −1 outside (measureDist=false),
 *   even–odd rule, exact for integer and half-integer query points.
 *
 * A contour is an Int32Array [P, 2] of (x, y) pixel coordinates, flattened.
 */

/** RETR_CCOMP hierarchy row: [next, previous, firstChild, parent], −1 when absent (OpenCV layout). */
export type HierarchyRow = [number, number, number, number];

export interface ContourResult {
  /** [n] contours, each [P, 2] (x, y) flattened. */
  contours: Int32Array[];
  /** [n] rows [next, previous, firstChild, parent]. */
  hierarchy: HierarchyRow[];
}

/** 8-neighbour offsets, clockwise on screen (y down) starting East: E, SE, S, SW, W, NW, N, NE. */
const DX = [1, 1, 0, -1, -1, -1, 0, 1];
const DY = [0, 1, 1, 1, 0, -1, -1, -1];

/**
 * Finds the borders of the nonzero regions of `mask` ([height, width] uint8, nonzero =
 * foreground) with RETR_CCOMP / CHAIN_APPROX_NONE semantics.
 */
export function findContours(mask: Uint8Array, width: number, height: number): ContourResult {
  if (mask.length !== width * height) throw new RangeError(`mask has ${mask.length} entries, expected ${width}×${height}`);
  // Padded label image: 0 background, 1 unvisited foreground, ±NBD visited border pixels.
  const W = width + 2;
  const H = height + 2;
  const f = new Int32Array(W * H);
  for (let y = 0; y < height; y++) {
    const row = (y + 1) * W + 1;
    for (let x = 0; x < width; x++) if (mask[y * width + x] !== 0) f[row + x] = 1;
  }
  const step = DX.map((dx, d) => dx + DY[d] * W);
  // Border table, indexed by NBD; NBD 1 is the frame (a hole border with no parent).
  const isHole: boolean[] = [false, true];
  const treeParent: number[] = [-1, -1];
  const points: Int32Array[] = [new Int32Array(0), new Int32Array(0)];
  let nbd = 1;
  const buf: number[] = [];

  for (let i = 1; i < H - 1; i++) {
    let lnbd = 1;
    for (let j = 1; j < W - 1; j++) {
      const p = i * W + j;
      const fij = f[p];
      if (fij === 0) continue;
      let startDir = -1;
      let hole = false;
      if (fij === 1 && f[p - 1] === 0) {
        startDir = 4; // (i2, j2) = (i, j − 1): West
      } else if (fij >= 1 && f[p + 1] === 0) {
        startDir = 0; // (i2, j2) = (i, j + 1): East
        hole = true;
        if (fij > 1) lnbd = fij;
      }
      if (startDir >= 0) {
        nbd++;
        // Step 2: the parent from the type of the border LNBD belongs to (Table 1 of the paper).
        const parent = isHole[lnbd] === hole ? treeParent[lnbd] : lnbd;
        isHole[nbd] = hole;
        treeParent[nbd] = parent;
        buf.length = 0;
        followBorder(f, p, startDir, nbd, step, buf);
        const pts = new Int32Array(buf.length);
        for (let k = 0; k < buf.length; k += 2) {
          pts[k] = buf[k] - 1; // undo the frame offset
          pts[k + 1] = buf[k + 1] - 1;
        }
        points[nbd] = pts;
      }
      // Step 4.
      const now = f[p];
      if (now !== 1) lnbd = Math.abs(now);
    }
  }
  return toCcomp(nbd, isHole, treeParent, points);

  function followBorder(img: Int32Array, start: number, startDir: number, label: number, offs: number[], out: number[]): void {
    // Step 3.1: clockwise from (i2, j2) around (i, j) for a nonzero pixel (i1, j1).
    let d1 = -1;
    for (let k = 0; k < 8; k++) {
      const d = (startDir + k) & 7;
      if (img[start + offs[d]] !== 0) {
        d1 = d;
        break;
      }
    }
    const sx = start % W;
    const sy = (start - sx) / W;
    if (d1 < 0) {
      img[start] = -label; // isolated pixel
      out.push(sx, sy);
      return;
    }
    const p1 = start + offs[d1];
    let p3 = start;
    let x3 = sx;
    let y3 = sy;
    let d2 = d1; // direction from p3 to p2
    for (;;) {
      out.push(x3, y3);
      // Step 3.3: counterclockwise from the element after (i2, j2) around p3.
      let d4 = -1;
      let eastZeroExamined = false;
      for (let k = 1; k <= 8; k++) {
        const d = (d2 - k + 8) & 7;
        if (img[p3 + offs[d]] !== 0) {
          d4 = d;
          break;
        }
        if (d === 0) eastZeroExamined = true;
      }
      // Step 3.4.
      if (eastZeroExamined) img[p3] = -label;
      else if (img[p3] === 1) img[p3] = label;
      const p4 = p3 + offs[d4];
      // Step 3.5.
      if (p4 === start && p3 === p1) return;
      d2 = (d4 + 4) & 7;
      p3 = p4;
      x3 += DX[d4];
      y3 += DY[d4];
    }
  }
}

/** Flattens the border tree (NBD 2..n) to OpenCV's RETR_CCOMP list and hierarchy. */
function toCcomp(nbd: number, isHole: boolean[], treeParent: number[], points: Int32Array[]): ContourResult {
  const outers: number[] = [];
  const holesOf = new Map<number, number[]>();
  for (let b = 2; b <= nbd; b++) {
    if (!isHole[b]) outers.push(b);
    else {
      const list = holesOf.get(treeParent[b]) ?? [];
      list.push(b);
      holesOf.set(treeParent[b], list);
    }
  }
  const contours: Int32Array[] = [];
  const hierarchy: HierarchyRow[] = [];
  let prevOuter = -1;
  for (const outer of outers.reverse()) {
    const index = contours.length;
    contours.push(points[outer]);
    hierarchy.push([-1, prevOuter, -1, -1]);
    if (prevOuter >= 0) hierarchy[prevOuter][0] = index;
    prevOuter = index;
    let prevHole = -1;
    for (const hole of (holesOf.get(outer) ?? []).reverse()) {
      const h = contours.length;
      contours.push(points[hole]);
      hierarchy.push([-1, prevHole, -1, index]);
      if (prevHole >= 0) hierarchy[prevHole][0] = h;
      else hierarchy[index][2] = h;
      prevHole = h;
    }
  }
  return { contours, hierarchy };
}

/** |shoelace area| of a closed polygon [P, 2] (cv2.contourArea with oriented=false). */
export function contourArea(contour: Int32Array | Float64Array): number {
  const n = contour.length >> 1;
  if (n < 3) return 0;
  let a = 0;
  let px = contour[2 * n - 2];
  let py = contour[2 * n - 1];
  for (let i = 0; i < n; i++) {
    const x = contour[2 * i];
    const y = contour[2 * i + 1];
    a += px * y - x * py;
    px = x;
    py = y;
  }
  return Math.abs(a * 0.5);
}

/** [x, y, width, height] of the points' integer bounding box (cv2.boundingRect). */
export function boundingRect(contour: Int32Array): [number, number, number, number] {
  const n = contour.length >> 1;
  if (n === 0) return [0, 0, 0, 0];
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = contour[2 * i];
    const y = contour[2 * i + 1];
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

/**
 * cv2.pointPolygonTest(contour, (x, y), measureDist=False): +1 strictly inside, 0 on the
 * boundary, −1 outside. Even–odd crossings of the ray to +x; an edge counts when one
 * endpoint has y' ≤ y and the other y' > y.
 */
export function pointPolygonTest(contour: Int32Array, x: number, y: number): -1 | 0 | 1 {
  const n = contour.length >> 1;
  if (n === 0) return -1;
  let inside = false;
  let x0 = contour[2 * n - 2];
  let y0 = contour[2 * n - 1];
  for (let i = 0; i < n; i++) {
    const x1 = contour[2 * i];
    const y1 = contour[2 * i + 1];
    // On this edge? (collinear and within its bounding box)
    if ((x - x0) * (y1 - y0) === (y - y0) * (x1 - x0) && x >= Math.min(x0, x1) && x <= Math.max(x0, x1) && y >= Math.min(y0, y1) && y <= Math.max(y0, y1)) {
      return 0;
    }
    if (y0 <= y !== y1 <= y) {
      const xCross = x0 + ((y - y0) * (x1 - x0)) / (y1 - y0);
      if (xCross > x) inside = !inside;
    }
    x0 = x1;
    y0 = y1;
  }
  return inside ? 1 : -1;
}

/**
 * `pointPolygonTest` for many queries against one polygon: per query row y it keeps
 * the sorted x of edge crossings and the boundary intervals, so a test costs
 * O(log P) after the row's O(P log P) set-up. Same results as `pointPolygonTest`.
 */
export class PolygonTester {
  /** Per query row y: sorted crossing x, and boundary intervals as [m, 2] (lo, running max hi). */
  private readonly rows = new Map<number, { crossings: Float64Array; boundary: Float64Array }>();
  private readonly x0: number;
  private readonly y0: number;
  private readonly x1: number;
  private readonly y1: number;

  constructor(private readonly contour: Int32Array) {
    const [bx, by, bw, bh] = boundingRect(contour);
    this.x0 = bx;
    this.y0 = by;
    this.x1 = bx + bw - 1;
    this.y1 = by + bh - 1;
  }

  private row(y: number): { crossings: Float64Array; boundary: Float64Array } {
    let r = this.rows.get(y);
    if (r) return r;
    const c = this.contour;
    const n = c.length >> 1;
    const crossings: number[] = [];
    const boundary: number[] = []; // pairs [lo, hi] of x on the boundary at this y
    let px = c[2 * n - 2];
    let py = c[2 * n - 1];
    for (let i = 0; i < n; i++) {
      const x = c[2 * i];
      const yy = c[2 * i + 1];
      if (py === y && yy === y) boundary.push(Math.min(px, x), Math.max(px, x));
      else if (Math.min(py, yy) <= y && y <= Math.max(py, yy)) {
        const xAt = px + ((y - py) * (x - px)) / (yy - py);
        boundary.push(xAt, xAt);
        if (py <= y !== yy <= y) crossings.push(xAt);
      }
      px = x;
      py = yy;
    }
    crossings.sort((a, b) => a - b);
    // Sort boundary intervals by start.
    const order = Array.from({ length: boundary.length / 2 }, (_, k) => k).sort((a, b) => boundary[2 * a] - boundary[2 * b]);
    // boundary → [m, 2] rows (lo, running max of hi over rows 0..k), sorted by lo.
    const sortedBoundary = new Float64Array(boundary.length);
    let maxHi = -Infinity;
    order.forEach((k, m) => {
      maxHi = Math.max(maxHi, boundary[2 * k + 1]);
      sortedBoundary[2 * m] = boundary[2 * k];
      sortedBoundary[2 * m + 1] = maxHi;
    });
    r = { crossings: Float64Array.from(crossings), boundary: sortedBoundary };
    this.rows.set(y, r);
    return r;
  }

  /** +1 inside, 0 on the boundary, −1 outside. */
  test(x: number, y: number): -1 | 0 | 1 {
    if (x < this.x0 || x > this.x1 || y < this.y0 || y > this.y1) return -1;
    const { crossings, boundary } = this.row(y);
    // On the boundary when some interval [lo, hi] has lo ≤ x ≤ hi: the last row with lo ≤ x holds max hi.
    const m = boundary.length >> 1;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (boundary[2 * mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && boundary[2 * lo - 1] >= x) return 0;
    // Crossings strictly right of x.
    let a = 0;
    let b = crossings.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (crossings[mid] <= x) a = mid + 1;
      else b = mid;
    }
    return (crossings.length - a) % 2 === 1 ? 1 : -1;
  }
}
