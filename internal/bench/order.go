package bench

import (
	"math/rand/v2"
	"slices"
)

// orders returns, for each of repeats, the order in which n sessions are measured: a
// permutation of 0..n-1 drawn from a PCG seeded with seed, so that a printed seed gives the
// same order again. Shuffling rather than a fixed order keeps a drift of the machine (a
// neighbour's load, a warming cache, thermal limits) from always favouring the same path,
// and no session is measured first in two repeats while repeats ≤ n: the first of each
// repeat is drawn without replacement.
func orders(n, repeats int, seed uint64) [][]int {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([][]int, repeats)
	if n == 0 {
		return out
	}
	firsts := rng.Perm(n)
	for r := range out {
		perm := rng.Perm(n)
		i := slices.Index(perm, firsts[r%n])
		perm[0], perm[i] = perm[i], perm[0]
		out[r] = perm
	}
	return out
}
