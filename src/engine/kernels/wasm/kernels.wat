;; The CPU backend's compute-bound kernel in WebAssembly SIMD (assembled by scripts/build.mjs into
;; dist/kernels.wasm). It computes exactly what cpuMath.ts's loraDeltaRows does, float64 operation for
;; float64 operation: each output element is ((0 + b_k0 a_k0) + b_k1 a_k1) + ... over the nonzero
;; b_k in ascending k, rounded to fp32, then times scale rounded to fp32 (an fp32 multiply). The products of two fp32 values are exact
;; in float64; the sums are done in the same order; only the columns are done two at a time (f64x2).
;; The caller (wasmKernels.ts) owns the memory layout and passes every pointer.

(module
  (memory (export "memory") 1)

  ;; Writes the two fp32 values f(f(acc) * f(scale)) at `p`, or (fold) p[j] = max(p[j], |value|) as
  ;; cpuMath.ts's maxAbsRange does it: a NaN never replaces, +0 never replaces -0.
  (func $emit (param $p i32) (param $acc v128) (param $sv v128) (param $fold i32)
    (local $v v128) (local $cur v128)
    (local.set $v (f32x4.mul (f32x4.demote_f64x2_zero (local.get $acc)) (local.get $sv)))
    (if (local.get $fold)
      (then
        (local.set $v (f32x4.abs (local.get $v)))
        (local.set $cur (v128.load64_zero (local.get $p)))
        (local.set $v (v128.bitselect (local.get $v) (local.get $cur) (f32x4.gt (local.get $v) (local.get $cur))))))
    (v128.store64_lane 0 (local.get $p) (local.get $v)))

  ;; Rows [0, rows) of scale * B @ A into out (rows x n fp32, row-major), or folded into it (fold != 0).
  ;;   a: A, r x n fp32          b: B, rows x r fp32
  ;;   nks: rows i32             koff: rows x r i32        bval: rows x r f64 (8-aligned)
  ;;   at: r x W f64 (16-aligned), a column tile of A in float64; W a multiple of 16
  (func (export "lora")
    (param $a i32) (param $b i32) (param $rows i32) (param $r i32) (param $n i32) (param $scale f64)
    (param $out i32) (param $fold i32) (param $nks i32) (param $koff i32) (param $bval i32) (param $at i32) (param $W i32)
    (local $i i32) (local $k i32) (local $g i32) (local $nk i32) (local $j i32) (local $t0 i32) (local $w i32)
    (local $bv f32) (local $src i32) (local $dst i32) (local $kl i32) (local $bl i32) (local $o i32) (local $p i32) (local $q i32)
    (local $sv v128) (local $bs v128) (local $bs2 v128) (local $x0 v128) (local $x1 v128) (local $bl2 i32) (local $o2 i32) (local $rstride i32)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128)
    (local.set $sv (f32x4.splat (f32.demote_f64 (local.get $scale))))
    (local.set $rstride (i32.shl (local.get $r) (i32.const 2)))

    ;; Each row's nonzero factors in ascending k, as the offset of their row in `at` and their float64 value
    ;; (f32.ne: a NaN counts as nonzero, -0 as zero, as `!== 0` does).
    (local.set $i (i32.const 0))
    (block $rows_done (loop $rows_loop
      (br_if $rows_done (i32.ge_u (local.get $i) (local.get $rows)))
      (local.set $nk (i32.const 0))
      (local.set $k (i32.const 0))
      (block $k_done (loop $k_loop
        (br_if $k_done (i32.ge_u (local.get $k) (local.get $r)))
        (local.set $bv (f32.load (i32.add (local.get $b) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $r)) (local.get $k)) (i32.const 2)))))
        (if (f32.ne (local.get $bv) (f32.const 0))
          (then
            (i32.store (i32.add (local.get $koff) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $r)) (local.get $nk)) (i32.const 2)))
              (i32.shl (i32.mul (local.get $k) (local.get $W)) (i32.const 3)))
            (f64.store (i32.add (local.get $bval) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $r)) (local.get $nk)) (i32.const 3)))
              (f64.promote_f32 (local.get $bv)))
            (local.set $nk (i32.add (local.get $nk) (i32.const 1)))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $k_loop)))
      (i32.store (i32.add (local.get $nks) (i32.shl (local.get $i) (i32.const 2))) (local.get $nk))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rows_loop)))

    ;; Column tiles of width W: A's tile in float64 stays in the cache while every row uses it.
    (local.set $t0 (i32.const 0))
    (block $tiles_done (loop $tiles_loop
      (br_if $tiles_done (i32.ge_u (local.get $t0) (local.get $n)))
      (local.set $w (i32.sub (local.get $n) (local.get $t0)))
      (if (i32.gt_u (local.get $w) (local.get $W)) (then (local.set $w (local.get $W))))

      ;; at[k][j] = A[k][t0 + j]
      (local.set $k (i32.const 0))
      (block $conv_done (loop $conv_loop
        (br_if $conv_done (i32.ge_u (local.get $k) (local.get $r)))
        (local.set $src (i32.add (local.get $a) (i32.shl (i32.add (i32.mul (local.get $k) (local.get $n)) (local.get $t0)) (i32.const 2))))
        (local.set $dst (i32.add (local.get $at) (i32.shl (i32.mul (local.get $k) (local.get $W)) (i32.const 3))))
        (local.set $j (i32.const 0))
        (block $cj_done (loop $cj_loop
          (br_if $cj_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $w)))
          (v128.store (i32.add (local.get $dst) (i32.shl (local.get $j) (i32.const 3)))
            (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $src) (i32.shl (local.get $j) (i32.const 2))))))
          (local.set $j (i32.add (local.get $j) (i32.const 2)))
          (br $cj_loop)))
        (if (i32.lt_u (local.get $j) (local.get $w))
          (then (f64.store (i32.add (local.get $dst) (i32.shl (local.get $j) (i32.const 3)))
            (f64.promote_f32 (f32.load (i32.add (local.get $src) (i32.shl (local.get $j) (i32.const 2))))))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $conv_loop)))

      (local.set $i (i32.const 0))
      (block $ri_done (loop $ri_loop
        (br_if $ri_done (i32.ge_u (local.get $i) (local.get $rows)))
        (local.set $nk (i32.load (i32.add (local.get $nks) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $kl (i32.add (local.get $koff) (i32.shl (i32.mul (local.get $i) (local.get $r)) (i32.const 2))))
        (local.set $bl (i32.add (local.get $bval) (i32.shl (i32.mul (local.get $i) (local.get $r)) (i32.const 3))))
        (local.set $o (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $t0)) (i32.const 2))))
        (local.set $j (i32.const 0))

        (if (i32.and (i32.lt_u (i32.add (local.get $i) (i32.const 1)) (local.get $rows))
              (call $same (local.get $kl) (i32.add (local.get $kl) (local.get $rstride)) (local.get $nk)
                (i32.load (i32.add (local.get $nks) (i32.shl (i32.add (local.get $i) (i32.const 1)) (i32.const 2))))))
          (then
            ;; Two rows with the same nonzero factors, 8 columns at a time: each load of A's tile serves both
            ;; rows; every sum is still its own, in ascending k.
            (local.set $bl2 (i32.add (local.get $bl) (i32.shl (local.get $rstride) (i32.const 1))))
            (local.set $o2 (i32.add (local.get $o) (i32.shl (local.get $n) (i32.const 2))))
            (block $j8_done (loop $j8_loop
              (br_if $j8_done (i32.gt_u (i32.add (local.get $j) (i32.const 8)) (local.get $w)))
              (local.set $c0 (v128.const i64x2 0 0)) (local.set $c1 (v128.const i64x2 0 0))
              (local.set $c2 (v128.const i64x2 0 0)) (local.set $c3 (v128.const i64x2 0 0))
              (local.set $c4 (v128.const i64x2 0 0)) (local.set $c5 (v128.const i64x2 0 0))
              (local.set $c6 (v128.const i64x2 0 0)) (local.set $c7 (v128.const i64x2 0 0))
              (local.set $p (i32.add (local.get $at) (i32.shl (local.get $j) (i32.const 3))))
              (local.set $g (i32.const 0))
              (block $g8_done (loop $g8_loop
                (br_if $g8_done (i32.ge_u (local.get $g) (local.get $nk)))
                (local.set $bs (v128.load64_splat (i32.add (local.get $bl) (i32.shl (local.get $g) (i32.const 3)))))
                (local.set $bs2 (v128.load64_splat (i32.add (local.get $bl2) (i32.shl (local.get $g) (i32.const 3)))))
                (local.set $q (i32.add (local.get $p) (i32.load (i32.add (local.get $kl) (i32.shl (local.get $g) (i32.const 2))))))
                (local.set $x0 (v128.load offset=0 (local.get $q)))
                (local.set $x1 (v128.load offset=16 (local.get $q)))
                (local.set $c0 (f64x2.add (local.get $c0) (f64x2.mul (local.get $bs) (local.get $x0))))
                (local.set $c4 (f64x2.add (local.get $c4) (f64x2.mul (local.get $bs2) (local.get $x0))))
                (local.set $c1 (f64x2.add (local.get $c1) (f64x2.mul (local.get $bs) (local.get $x1))))
                (local.set $c5 (f64x2.add (local.get $c5) (f64x2.mul (local.get $bs2) (local.get $x1))))
                (local.set $x0 (v128.load offset=32 (local.get $q)))
                (local.set $x1 (v128.load offset=48 (local.get $q)))
                (local.set $c2 (f64x2.add (local.get $c2) (f64x2.mul (local.get $bs) (local.get $x0))))
                (local.set $c6 (f64x2.add (local.get $c6) (f64x2.mul (local.get $bs2) (local.get $x0))))
                (local.set $c3 (f64x2.add (local.get $c3) (f64x2.mul (local.get $bs) (local.get $x1))))
                (local.set $c7 (f64x2.add (local.get $c7) (f64x2.mul (local.get $bs2) (local.get $x1))))
                (local.set $g (i32.add (local.get $g) (i32.const 1)))
                (br $g8_loop)))
            (local.set $q (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
            (call $emit (i32.add (local.get $q) (i32.const 0)) (local.get $c0) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 8)) (local.get $c1) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 16)) (local.get $c2) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 24)) (local.get $c3) (local.get $sv) (local.get $fold))
            (local.set $q (i32.add (local.get $o2) (i32.shl (local.get $j) (i32.const 2))))
            (call $emit (i32.add (local.get $q) (i32.const 0)) (local.get $c4) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 8)) (local.get $c5) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 16)) (local.get $c6) (local.get $sv) (local.get $fold))
            (call $emit (i32.add (local.get $q) (i32.const 24)) (local.get $c7) (local.get $sv) (local.get $fold))
              (local.set $j (i32.add (local.get $j) (i32.const 8)))
              (br $j8_loop)))
            (call $row (local.get $at) (local.get $kl) (local.get $bl) (local.get $nk) (local.get $o) (local.get $j) (local.get $w) (local.get $sv) (local.get $scale) (local.get $fold))
            (call $row (local.get $at) (i32.add (local.get $kl) (local.get $rstride)) (local.get $bl2) (local.get $nk) (local.get $o2) (local.get $j) (local.get $w)
              (local.get $sv) (local.get $scale) (local.get $fold))
            (local.set $i (i32.add (local.get $i) (i32.const 2))))
          (else
            (call $row (local.get $at) (local.get $kl) (local.get $bl) (local.get $nk) (local.get $o) (i32.const 0) (local.get $w) (local.get $sv) (local.get $scale) (local.get $fold))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))))
        (br $ri_loop)))


      (local.set $t0 (i32.add (local.get $t0) (local.get $W)))
      (br $tiles_loop))))
  ;; Columns [j, w) of one row of `lora`'s tile: its nonzero factors' offsets in `at` at kl and float64
  ;; values at bl (nk of them), its output at o.
  (func $row (param $at i32) (param $kl i32) (param $bl i32) (param $nk i32) (param $o i32) (param $j i32) (param $w i32)
    (param $sv v128) (param $scale f64) (param $fold i32)
    (local $g i32) (local $p i32) (local $q i32) (local $bs v128) (local $s f64) (local $bv f32)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128)
    ;; 16 columns at a time: eight independent f64x2 sums in registers.
    (block $j16_done (loop $j16_loop
      (br_if $j16_done (i32.gt_u (i32.add (local.get $j) (i32.const 16)) (local.get $w)))
      (local.set $c0 (v128.const i64x2 0 0)) (local.set $c1 (v128.const i64x2 0 0))
      (local.set $c2 (v128.const i64x2 0 0)) (local.set $c3 (v128.const i64x2 0 0))
      (local.set $c4 (v128.const i64x2 0 0)) (local.set $c5 (v128.const i64x2 0 0))
      (local.set $c6 (v128.const i64x2 0 0)) (local.set $c7 (v128.const i64x2 0 0))
      (local.set $p (i32.add (local.get $at) (i32.shl (local.get $j) (i32.const 3))))
      (local.set $g (i32.const 0))
      (block $g_done (loop $g_loop
        (br_if $g_done (i32.ge_u (local.get $g) (local.get $nk)))
        (local.set $bs (v128.load64_splat (i32.add (local.get $bl) (i32.shl (local.get $g) (i32.const 3)))))
        (local.set $q (i32.add (local.get $p) (i32.load (i32.add (local.get $kl) (i32.shl (local.get $g) (i32.const 2))))))
        (local.set $c0 (f64x2.add (local.get $c0) (f64x2.mul (local.get $bs) (v128.load offset=0 (local.get $q)))))
        (local.set $c1 (f64x2.add (local.get $c1) (f64x2.mul (local.get $bs) (v128.load offset=16 (local.get $q)))))
        (local.set $c2 (f64x2.add (local.get $c2) (f64x2.mul (local.get $bs) (v128.load offset=32 (local.get $q)))))
        (local.set $c3 (f64x2.add (local.get $c3) (f64x2.mul (local.get $bs) (v128.load offset=48 (local.get $q)))))
        (local.set $c4 (f64x2.add (local.get $c4) (f64x2.mul (local.get $bs) (v128.load offset=64 (local.get $q)))))
        (local.set $c5 (f64x2.add (local.get $c5) (f64x2.mul (local.get $bs) (v128.load offset=80 (local.get $q)))))
        (local.set $c6 (f64x2.add (local.get $c6) (f64x2.mul (local.get $bs) (v128.load offset=96 (local.get $q)))))
        (local.set $c7 (f64x2.add (local.get $c7) (f64x2.mul (local.get $bs) (v128.load offset=112 (local.get $q)))))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $g_loop)))
      (local.set $q (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
      (call $emit (i32.add (local.get $q) (i32.const 0)) (local.get $c0) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 8)) (local.get $c1) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 16)) (local.get $c2) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 24)) (local.get $c3) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 32)) (local.get $c4) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 40)) (local.get $c5) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 48)) (local.get $c6) (local.get $sv) (local.get $fold))
      (call $emit (i32.add (local.get $q) (i32.const 56)) (local.get $c7) (local.get $sv) (local.get $fold))
      (local.set $j (i32.add (local.get $j) (i32.const 16)))
      (br $j16_loop)))

    ;; Two columns at a time.
    (block $j2_done (loop $j2_loop
      (br_if $j2_done (i32.gt_u (i32.add (local.get $j) (i32.const 2)) (local.get $w)))
      (local.set $c0 (v128.const i64x2 0 0))
      (local.set $p (i32.add (local.get $at) (i32.shl (local.get $j) (i32.const 3))))
      (local.set $g (i32.const 0))
      (block $g2_done (loop $g2_loop
        (br_if $g2_done (i32.ge_u (local.get $g) (local.get $nk)))
        (local.set $bs (v128.load64_splat (i32.add (local.get $bl) (i32.shl (local.get $g) (i32.const 3)))))
        (local.set $q (i32.add (local.get $p) (i32.load (i32.add (local.get $kl) (i32.shl (local.get $g) (i32.const 2))))))
        (local.set $c0 (f64x2.add (local.get $c0) (f64x2.mul (local.get $bs) (v128.load (local.get $q)))))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $g2_loop)))
      (call $emit (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))) (local.get $c0) (local.get $sv) (local.get $fold))
      (local.set $j (i32.add (local.get $j) (i32.const 2)))
      (br $j2_loop)))

    ;; The last column of an odd-width tile: one float64 sum.
    (if (i32.lt_u (local.get $j) (local.get $w))
      (then
        (local.set $s (f64.const 0))
        (local.set $p (i32.add (local.get $at) (i32.shl (local.get $j) (i32.const 3))))
        (local.set $g (i32.const 0))
        (block $g1_done (loop $g1_loop
          (br_if $g1_done (i32.ge_u (local.get $g) (local.get $nk)))
          (local.set $s (f64.add (local.get $s)
            (f64.mul (f64.load (i32.add (local.get $bl) (i32.shl (local.get $g) (i32.const 3))))
              (f64.load (i32.add (local.get $p) (i32.load (i32.add (local.get $kl) (i32.shl (local.get $g) (i32.const 2)))))))))
          (local.set $g (i32.add (local.get $g) (i32.const 1)))
          (br $g1_loop)))
        (local.set $q (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
        (local.set $bv (f32.mul (f32.demote_f64 (local.get $s)) (f32.demote_f64 (local.get $scale))))
        (if (local.get $fold)
          (then
            (local.set $bv (f32.abs (local.get $bv)))
            (if (f32.gt (local.get $bv) (f32.load (local.get $q))) (then (f32.store (local.get $q) (local.get $bv)))))
          (else (f32.store (local.get $q) (local.get $bv)))))))

  ;; Whether two rows' nonzero factors sit at the same k: nk == nk2 and the same offsets in `at`.
  (func $same (param $kl i32) (param $kl2 i32) (param $nk i32) (param $nk2 i32) (result i32)
    (local $g i32)
    (if (i32.ne (local.get $nk) (local.get $nk2)) (then (return (i32.const 0))))
    (block $done (loop $cmp
      (br_if $done (i32.ge_u (local.get $g) (local.get $nk)))
      (if (i32.ne (i32.load (i32.add (local.get $kl) (i32.shl (local.get $g) (i32.const 2))))
                  (i32.load (i32.add (local.get $kl2) (i32.shl (local.get $g) (i32.const 2)))))
        (then (return (i32.const 0))))
      (local.set $g (i32.add (local.get $g) (i32.const 1)))
      (br $cmp)))
    (i32.const 1))

;; The float32 pass of the certified mask (unmerge/certified.ts): out[i][j] = max(out[i][j], |f(z * scale)|)
  ;; for rows [0, rows), z = sum_k b_ik a_kj summed in fp32 (f32x4, k ascending). Not bit-identical to
  ;; `lora`: its error is what certified.ts bounds, and the elements whose bound straddles the k-th value
  ;; are recomputed exactly.
  ;;   a: A, r x n fp32 (row stride n)   b: B, rows x r fp32   out: rows x n fp32
  ;;   W: the column tile (a multiple of 32): A's r x W tile stays in the L1 cache while every row uses it.
  (func (export "lora32")
    (param $a i32) (param $b i32) (param $rows i32) (param $r i32) (param $n i32) (param $scale f32) (param $out i32) (param $W i32)
    (local $t0 i32) (local $w i32) (local $i i32) (local $j i32) (local $k i32) (local $stride i32) (local $rstride i32)
    (local $p i32) (local $q i32) (local $bp i32) (local $o i32)
    (local $sv v128) (local $bs v128) (local $bs2 v128) (local $x0 v128) (local $x1 v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128)
    (local.set $sv (f32x4.splat (local.get $scale)))
    (local.set $stride (i32.shl (local.get $n) (i32.const 2)))
    (local.set $rstride (i32.shl (local.get $r) (i32.const 2)))
    (local.set $t0 (i32.const 0))
    (block $tiles_done (loop $tiles_loop
      (br_if $tiles_done (i32.ge_u (local.get $t0) (local.get $n)))
      (local.set $w (i32.sub (local.get $n) (local.get $t0)))
      (if (i32.gt_u (local.get $w) (local.get $W)) (then (local.set $w (local.get $W))))
      (local.set $i (i32.const 0))
      (block $ri_done (loop $ri_loop
        (br_if $ri_done (i32.ge_u (local.get $i) (local.get $rows)))
        (local.set $bp (i32.add (local.get $b) (i32.shl (i32.mul (local.get $i) (local.get $r)) (i32.const 2))))
        (local.set $o (i32.add (local.get $out) (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $t0)) (i32.const 2))))
        (local.set $j (i32.const 0))
        (if (i32.lt_u (i32.add (local.get $i) (i32.const 1)) (local.get $rows))
          (then
        ;; Two rows, 16 columns at a time: each load of A serves both rows (eight f32x4 sums in registers).
        (block $j16_done (loop $j16_loop
          (br_if $j16_done (i32.gt_u (i32.add (local.get $j) (i32.const 16)) (local.get $w)))
          (local.set $c0 (v128.const i64x2 0 0))
          (local.set $c1 (v128.const i64x2 0 0))
          (local.set $c2 (v128.const i64x2 0 0))
          (local.set $c3 (v128.const i64x2 0 0))
          (local.set $c4 (v128.const i64x2 0 0))
          (local.set $c5 (v128.const i64x2 0 0))
          (local.set $c6 (v128.const i64x2 0 0))
          (local.set $c7 (v128.const i64x2 0 0))
          (local.set $p (i32.add (local.get $a) (i32.shl (i32.add (local.get $t0) (local.get $j)) (i32.const 2))))
          (local.set $q (local.get $bp))
          (local.set $k (i32.const 0))
          (block $k2_done (loop $k2_loop
            (br_if $k2_done (i32.ge_u (local.get $k) (local.get $r)))
            (local.set $bs (v128.load32_splat (local.get $q)))
            (local.set $bs2 (v128.load32_splat (i32.add (local.get $q) (local.get $rstride))))
            (local.set $x0 (v128.load offset=0 (local.get $p)))
            (local.set $x1 (v128.load offset=16 (local.get $p)))
            (local.set $c0 (f32x4.add (local.get $c0) (f32x4.mul (local.get $bs) (local.get $x0))))
            (local.set $c4 (f32x4.add (local.get $c4) (f32x4.mul (local.get $bs2) (local.get $x0))))
            (local.set $c1 (f32x4.add (local.get $c1) (f32x4.mul (local.get $bs) (local.get $x1))))
            (local.set $c5 (f32x4.add (local.get $c5) (f32x4.mul (local.get $bs2) (local.get $x1))))
            (local.set $x0 (v128.load offset=32 (local.get $p)))
            (local.set $x1 (v128.load offset=48 (local.get $p)))
            (local.set $c2 (f32x4.add (local.get $c2) (f32x4.mul (local.get $bs) (local.get $x0))))
            (local.set $c6 (f32x4.add (local.get $c6) (f32x4.mul (local.get $bs2) (local.get $x0))))
            (local.set $c3 (f32x4.add (local.get $c3) (f32x4.mul (local.get $bs) (local.get $x1))))
            (local.set $c7 (f32x4.add (local.get $c7) (f32x4.mul (local.get $bs2) (local.get $x1))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $q (i32.add (local.get $q) (i32.const 4)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $k2_loop)))
          (local.set $q (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
          (v128.store offset=0 (local.get $q) (f32x4.pmax (v128.load offset=0 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c0) (local.get $sv)))))
          (v128.store offset=16 (local.get $q) (f32x4.pmax (v128.load offset=16 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c1) (local.get $sv)))))
          (v128.store offset=32 (local.get $q) (f32x4.pmax (v128.load offset=32 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c2) (local.get $sv)))))
          (v128.store offset=48 (local.get $q) (f32x4.pmax (v128.load offset=48 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c3) (local.get $sv)))))
          (local.set $q (i32.add (local.get $q) (local.get $stride)))
          (v128.store offset=0 (local.get $q) (f32x4.pmax (v128.load offset=0 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c4) (local.get $sv)))))
          (v128.store offset=16 (local.get $q) (f32x4.pmax (v128.load offset=16 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c5) (local.get $sv)))))
          (v128.store offset=32 (local.get $q) (f32x4.pmax (v128.load offset=32 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c6) (local.get $sv)))))
          (v128.store offset=48 (local.get $q) (f32x4.pmax (v128.load offset=48 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c7) (local.get $sv)))))
          (local.set $j (i32.add (local.get $j) (i32.const 16)))
          (br $j16_loop)))
        ;; The rest of the tile, one column of each row at a time.
        (block $jt_done (loop $jt_loop
          (br_if $jt_done (i32.ge_u (local.get $j) (local.get $w)))
          (call $col32 (local.get $a) (local.get $bp) (local.get $r) (local.get $stride) (local.get $scale)
            (i32.add (local.get $t0) (local.get $j)) (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
          (call $col32 (local.get $a) (i32.add (local.get $bp) (local.get $rstride)) (local.get $r) (local.get $stride) (local.get $scale)
            (i32.add (local.get $t0) (local.get $j)) (i32.add (i32.add (local.get $o) (local.get $stride)) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $jt_loop)))
            (local.set $i (i32.add (local.get $i) (i32.const 2))))
          (else
        ;; The last row of an odd count: 32 columns at a time (eight f32x4 sums in registers).
        (block $j32_done (loop $j32_loop
          (br_if $j32_done (i32.gt_u (i32.add (local.get $j) (i32.const 32)) (local.get $w)))
          (local.set $c0 (v128.const i64x2 0 0))
          (local.set $c1 (v128.const i64x2 0 0))
          (local.set $c2 (v128.const i64x2 0 0))
          (local.set $c3 (v128.const i64x2 0 0))
          (local.set $c4 (v128.const i64x2 0 0))
          (local.set $c5 (v128.const i64x2 0 0))
          (local.set $c6 (v128.const i64x2 0 0))
          (local.set $c7 (v128.const i64x2 0 0))
          (local.set $p (i32.add (local.get $a) (i32.shl (i32.add (local.get $t0) (local.get $j)) (i32.const 2))))
          (local.set $q (local.get $bp))
          (local.set $k (i32.const 0))
          (block $k_done (loop $k_loop
            (br_if $k_done (i32.ge_u (local.get $k) (local.get $r)))
            (local.set $bs (v128.load32_splat (local.get $q)))
            (local.set $c0 (f32x4.add (local.get $c0) (f32x4.mul (local.get $bs) (v128.load offset=0 (local.get $p)))))
            (local.set $c1 (f32x4.add (local.get $c1) (f32x4.mul (local.get $bs) (v128.load offset=16 (local.get $p)))))
            (local.set $c2 (f32x4.add (local.get $c2) (f32x4.mul (local.get $bs) (v128.load offset=32 (local.get $p)))))
            (local.set $c3 (f32x4.add (local.get $c3) (f32x4.mul (local.get $bs) (v128.load offset=48 (local.get $p)))))
            (local.set $c4 (f32x4.add (local.get $c4) (f32x4.mul (local.get $bs) (v128.load offset=64 (local.get $p)))))
            (local.set $c5 (f32x4.add (local.get $c5) (f32x4.mul (local.get $bs) (v128.load offset=80 (local.get $p)))))
            (local.set $c6 (f32x4.add (local.get $c6) (f32x4.mul (local.get $bs) (v128.load offset=96 (local.get $p)))))
            (local.set $c7 (f32x4.add (local.get $c7) (f32x4.mul (local.get $bs) (v128.load offset=112 (local.get $p)))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $q (i32.add (local.get $q) (i32.const 4)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $k_loop)))
          (local.set $q (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
          (v128.store offset=0 (local.get $q) (f32x4.pmax (v128.load offset=0 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c0) (local.get $sv)))))
          (v128.store offset=16 (local.get $q) (f32x4.pmax (v128.load offset=16 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c1) (local.get $sv)))))
          (v128.store offset=32 (local.get $q) (f32x4.pmax (v128.load offset=32 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c2) (local.get $sv)))))
          (v128.store offset=48 (local.get $q) (f32x4.pmax (v128.load offset=48 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c3) (local.get $sv)))))
          (v128.store offset=64 (local.get $q) (f32x4.pmax (v128.load offset=64 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c4) (local.get $sv)))))
          (v128.store offset=80 (local.get $q) (f32x4.pmax (v128.load offset=80 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c5) (local.get $sv)))))
          (v128.store offset=96 (local.get $q) (f32x4.pmax (v128.load offset=96 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c6) (local.get $sv)))))
          (v128.store offset=112 (local.get $q) (f32x4.pmax (v128.load offset=112 (local.get $q)) (f32x4.abs (f32x4.mul (local.get $c7) (local.get $sv)))))
          (local.set $j (i32.add (local.get $j) (i32.const 32)))
          (br $j32_loop)))
        (block $j1_done (loop $j1_loop
          (br_if $j1_done (i32.ge_u (local.get $j) (local.get $w)))
          (call $col32 (local.get $a) (local.get $bp) (local.get $r) (local.get $stride) (local.get $scale)
            (i32.add (local.get $t0) (local.get $j)) (i32.add (local.get $o) (i32.shl (local.get $j) (i32.const 2))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $j1_loop)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))))
        (br $ri_loop)))
      (local.set $t0 (i32.add (local.get $t0) (local.get $W)))
      (br $tiles_loop))))

  ;; One element of lora32: column j of the row whose B is at bp, folded into the fp32 at o.
  (func $col32 (param $a i32) (param $bp i32) (param $r i32) (param $stride i32) (param $scale f32) (param $j i32) (param $o i32)
    (local $s f32) (local $p i32) (local $k i32) (local $x f32)
    (local.set $p (i32.add (local.get $a) (i32.shl (local.get $j) (i32.const 2))))
    (block $k_done (loop $k_loop
      (br_if $k_done (i32.ge_u (local.get $k) (local.get $r)))
      (local.set $s (f32.add (local.get $s) (f32.mul (f32.load (i32.add (local.get $bp) (i32.shl (local.get $k) (i32.const 2)))) (f32.load (local.get $p)))))
      (local.set $p (i32.add (local.get $p) (local.get $stride)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $k_loop)))
    (local.set $x (f32.abs (f32.mul (local.get $s) (local.get $scale))))
    (if (f32.gt (local.get $x) (f32.load (local.get $o))) (then (f32.store (local.get $o) (local.get $x)))))

  ;; dst[i] = the fp32 value with bits src[i] << 16 (bf16 widened, exactly as half.ts's decodeBf16Array),
  ;; i < n: src n u16 values, dst n fp32 values.
  (func (export "bf16") (param $src i32) (param $n i32) (param $dst i32)
    (local $i i32) (local $v v128) (local $o i32)
    (block $v_done (loop $v_loop
      (br_if $v_done (i32.gt_u (i32.add (local.get $i) (i32.const 8)) (local.get $n)))
      (local.set $v (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))))
      (local.set $o (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2))))
      (v128.store offset=0 (local.get $o) (i32x4.shl (i32x4.extend_low_i16x8_u (local.get $v)) (i32.const 16)))
      (v128.store offset=16 (local.get $o) (i32x4.shl (i32x4.extend_high_i16x8_u (local.get $v)) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $v_loop)))
    (block $s_done (loop $s_loop
      (br_if $s_done (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
        (i32.shl (i32.load16_u (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1)))) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $s_loop))))
)
