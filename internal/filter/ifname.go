package filter

import "net"

func ifNameByIndex(index uint32) (string, bool) {
	ifi, err := net.InterfaceByIndex(int(index))
	if err != nil {
		return "", false
	}
	return ifi.Name, true
}

// IndexOf resolves configured interface names to their current indexes; names that do not
// exist yet are left out (their packets are resolved on arrival).
func IndexOf(names []string) map[string]uint32 {
	out := make(map[string]uint32, len(names))
	for _, n := range names {
		if ifi, err := net.InterfaceByName(n); err == nil {
			out[n] = uint32(ifi.Index)
		}
	}
	return out
}
