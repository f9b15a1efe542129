package main

import (
	"fmt"
	"io"
)

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd demo: not built yet")
	return 2
}
func cmdBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd bench: not built yet")
	return 2
}
