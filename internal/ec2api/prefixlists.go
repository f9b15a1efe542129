package ec2api

import (
	"encoding/xml"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/rules"
	"github.com/sgd-firewall/sgd/internal/store"
)

// Customer-managed prefix lists (EC2 API reference: CreateManagedPrefixList,
// DescribeManagedPrefixLists, ModifyManagedPrefixList, DeleteManagedPrefixList,
// GetManagedPrefixListEntries). The API's lists live in the store and reach the packet
// path like its groups: every change is validated with the config file and compiled,
// and a rule that references a list matches its new entries from the next flow on. The
// config file's prefix lists are described and read like the API's, and refused to every
// change.

const (
	// maxEntriesPerRequest bounds Entry.N, AddEntry.N and RemoveEntry.N (the service
	// model's AddPrefixListEntries and RemovePrefixListEntries: at most 100).
	maxEntriesPerRequest = 100
	// maxPrefixListSize bounds MaxEntries (Amazon VPC quotas: at most 1,000 entries).
	maxPrefixListSize = 1000
	// maxPrefixListName and maxEntryDescription are AWS's lengths (255 characters).
	maxPrefixListName   = 255
	maxEntryDescription = 255

	familyIPv4 = "IPv4"
	familyIPv6 = "IPv6"

	stateCreated  = "create-complete"
	stateModified = "modify-complete"
	stateDeleted  = "delete-complete"
)

var prefixListIDRe = regexp.MustCompile(`^pl-[A-Za-z0-9-]+$`)

func checkPrefixListID(id string) error {
	if !prefixListIDRe.MatchString(id) {
		return errf(codePrefixListMalformed, "Invalid id: %q (expecting \"pl-...\")", id)
	}
	return nil
}

func checkPrefixListName(name string) error {
	switch {
	case name == "" || len(name) > maxPrefixListName:
		return errf(codeInvalidParameterValue, "The prefix list name must be 1 to %d characters long", maxPrefixListName)
	case strings.HasPrefix(strings.ToLower(name), "com.amazonaws"):
		return errf(codeInvalidParameterValue, "The prefix list name cannot start with com.amazonaws (reserved for AWS-managed prefix lists)")
	}
	return nil
}

// prefixListID reads the PrefixListId an action names.
func (c *call) prefixListID() (string, error) {
	id, err := c.q.required("PrefixListId")
	if err != nil {
		return "", err
	}
	return id, checkPrefixListID(id)
}

// entry is one CIDR a request names, parsed; param is where (Entry.3.Cidr).
type entry struct {
	prefix netip.Prefix
	desc   string
	param  string
}

// cidr is the entry as stored and shown: masked, as netip prints it.
func (e entry) cidr() string { return e.prefix.Masked().String() }

// entries reads the list name.N (Cidr, and Description when desc) of a request.
func (c *call) entries(name string, desc bool) ([]entry, error) {
	ms, err := c.q.members(name)
	if err != nil {
		return nil, err
	}
	if len(ms) > maxEntriesPerRequest {
		// AWS's own words for this refusal.
		return nil, errf(codeInvalidParameterValue, "The number of entries per request cannot exceeds limit (%d).", maxEntriesPerRequest)
	}
	var out []entry
	seen := map[netip.Prefix]string{}
	for _, m := range ms {
		s, err := m.required("Cidr")
		if err != nil {
			return nil, err
		}
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, errf(codeInvalidParameterValue, "The CIDR '%s' (%sCidr) is not a valid CIDR block", s, m.prefix)
		}
		e := entry{prefix: p, param: m.prefix + "Cidr"}
		if desc {
			if e.desc = m.str("Description"); len(e.desc) > maxEntryDescription {
				return nil, errf(codeInvalidParameterValue, "The description of %s is longer than %d characters", s, maxEntryDescription)
			}
		}
		if other, dup := seen[p.Masked()]; dup {
			return nil, errf(codeInvalidParameterValue, "The CIDR %s is given twice (%s and %s)", e.cidr(), other, e.param)
		}
		seen[p.Masked()] = e.param
		out = append(out, e)
	}
	return out, nil
}

// checkFamily refuses an entry of the other address family than the list's.
func checkFamily(es []entry, family string) error {
	for _, e := range es {
		if e.prefix.Addr().Is4() != (family == familyIPv4) {
			return errf(codeInvalidParameterValue, "The CIDR %s (%s) is not an %s CIDR block, the address family of the prefix list", e.cidr(), e.param, family)
		}
	}
	return nil
}

func storeEntries(es []entry) []store.PrefixEntry {
	out := make([]store.PrefixEntry, 0, len(es))
	for _, e := range es {
		out = append(out, store.PrefixEntry{Cidr: e.cidr(), Description: e.desc})
	}
	return out
}

// maxEntries reads MaxEntries (nil when absent), refusing a size AWS does not allow.
func (c *call) maxEntries() (*int, error) {
	n, err := c.q.integer("MaxEntries")
	if err != nil || n == nil {
		return nil, err
	}
	if *n < 1 || *n > maxPrefixListSize {
		return nil, errf(codeInvalidParameterValue, "MaxEntries must be between 1 and %d, not %d", maxPrefixListSize, *n)
	}
	return n, nil
}

// shownList is a prefix list the API shows: the API's own, or one of the config file's
// (file: read-only). The running model keeps a file list's id and entries only — no
// name, entry descriptions, size or versions — so it shows without a name, at version 1,
// as large as it is, and of the family its entries are (an sgd file list may hold both:
// "IPv4,IPv6").
type shownList struct {
	store.PrefixList
	file bool
}

// prefixLists returns every prefix list in force: the config file's (by id), then the
// API's (in the order they were made).
func (c *call) prefixLists() []shownList {
	var out []shownList
	var fileIDs []string
	for id := range c.model.PrefixLists {
		if c.snap.PrefixList(id) == nil {
			fileIDs = append(fileIDs, id)
		}
	}
	slices.Sort(fileIDs)
	for _, id := range fileIDs {
		pl := store.PrefixList{ID: id, Version: 1, State: stateCreated}
		v4, v6 := false, false
		for _, p := range c.model.PrefixLists[id] {
			pl.Entries = append(pl.Entries, store.PrefixEntry{Cidr: p.String()})
			v4, v6 = v4 || p.Addr().Is4(), v6 || !p.Addr().Is4()
		}
		store.SortEntries(pl.Entries)
		pl.MaxEntries = len(pl.Entries)
		switch {
		case v4 && v6:
			pl.AddressFamily = familyIPv4 + "," + familyIPv6
		case v6:
			pl.AddressFamily = familyIPv6
		default:
			pl.AddressFamily = familyIPv4
		}
		out = append(out, shownList{PrefixList: pl, file: true})
	}
	for _, pl := range c.snap.PrefixLists {
		out = append(out, shownList{PrefixList: pl})
	}
	return out
}

// shownList returns the prefix list with the given id, or InvalidPrefixListID.NotFound.
func (c *call) shownList(id string) (shownList, error) {
	for _, l := range c.prefixLists() {
		if l.ID == id {
			return l, nil
		}
	}
	return shownList{}, errf(codePrefixListNotFound, "The prefix list ID '%s' does not exist", id)
}

// writablePrefixList returns the API's prefix list id in s, refusing one of the config file.
func (c *call) writablePrefixList(s *store.Snapshot, id string) (*store.PrefixList, error) {
	if pl := s.PrefixList(id); pl != nil {
		return pl, nil
	}
	if _, inModel := c.model.PrefixLists[id]; inModel {
		return nil, errf(codeReadOnly, "The prefix list '%s' is defined in sgd's config file and is read-only through the API; change it in the file (and reload), or create a prefix list through the API", id)
	}
	return nil, errf(codePrefixListNotFound, "The prefix list ID '%s' does not exist", id)
}

func createManagedPrefixList(c *call) (response, error) {
	name, err := c.q.required("PrefixListName")
	if err != nil {
		return nil, err
	}
	family, err := c.q.required("AddressFamily")
	if err != nil {
		return nil, err
	}
	if !c.q.has("MaxEntries") {
		return nil, errf(codeMissingParameter, "The request must contain the parameter MaxEntries")
	}
	max, err := c.maxEntries()
	if err != nil {
		return nil, err
	}
	token := c.q.str("ClientToken")
	es, err := c.entries("Entry", true)
	if err != nil {
		return nil, err
	}
	tags, err := c.tagSpecs("prefix-list")
	if err != nil {
		return nil, err
	}
	if err := checkPrefixListName(name); err != nil {
		return nil, err
	}
	if family != familyIPv4 && family != familyIPv6 {
		return nil, errf(codeInvalidParameterValue, "Invalid value '%s' for AddressFamily: IPv4 or IPv6", family)
	}
	if err := checkFamily(es, family); err != nil {
		return nil, err
	}
	if len(es) > *max {
		return nil, errf(codePrefixListMaxEntries, "The prefix list would have %d entries, more than its maximum of %d (MaxEntries)", len(es), *max)
	}
	pl := store.PrefixList{ID: newID("pl-"), Name: name, AddressFamily: family, MaxEntries: *max, Version: 1,
		Entries: storeEntries(es), Tags: tags, State: stateCreated, ClientToken: token}
	store.SortEntries(pl.Entries)
	err = c.change(func(s *store.Snapshot) error {
		// The same create retried (the CLI and SDKs send a ClientToken with each): the
		// list it made, not a second one.
		for _, old := range s.PrefixLists {
			if token == "" || old.ClientToken != token {
				continue
			}
			if old.Name != pl.Name || old.AddressFamily != pl.AddressFamily || old.MaxEntries != pl.MaxEntries {
				return errf(codeIdempotentMismatch, "The client token %s was used for a different request (prefix list %s)", token, old.ID)
			}
			pl = old
			return nil
		}
		s.PrefixLists = append(s.PrefixLists, pl)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &prefixListResponse{XMLName: xml.Name{Local: "CreateManagedPrefixListResponse"}, PrefixList: c.xmlPrefixList(pl)}, nil
}

func describeManagedPrefixLists(c *call) (response, error) {
	ids, filters, err := c.q.selection("PrefixListId")
	if err != nil {
		return nil, err
	}
	max, token, err := c.q.paging()
	if err != nil {
		return nil, err
	}
	if err := c.read(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := checkPrefixListID(id); err != nil {
			return nil, err
		}
		if _, err := c.shownList(id); err != nil {
			return nil, err
		}
	}
	picked, next, err := filterPage(c.prefixLists(), ids, filters, prefixListBounds, max, token, func(l shownList) string { return l.ID },
		func(l shownList, name string) ([]string, bool) {
			switch name {
			case "prefix-list-id":
				return []string{l.ID}, true
			case "prefix-list-name":
				return []string{l.Name}, true
			case "owner-id":
				return []string{c.h.opt.OwnerID}, true
			}
			return nil, false
		}, c.tagsOf)
	if err != nil {
		return nil, err
	}
	resp := &describePrefixListsResponse{NextToken: next}
	for _, l := range picked {
		resp.PrefixLists.Items = append(resp.PrefixLists.Items, c.xmlPrefixList(l.PrefixList))
	}
	return resp, nil
}

func modifyManagedPrefixList(c *call) (response, error) {
	id, err := c.prefixListID()
	if err != nil {
		return nil, err
	}
	current, err := c.q.long("CurrentVersion")
	if err != nil {
		return nil, err
	}
	rename := c.q.has("PrefixListName")
	name := c.q.str("PrefixListName")
	if rename {
		if err := checkPrefixListName(name); err != nil {
			return nil, err
		}
	}
	max, err := c.maxEntries()
	if err != nil {
		return nil, err
	}
	add, err := c.entries("AddEntry", true)
	if err != nil {
		return nil, err
	}
	remove, err := c.entries("RemoveEntry", false)
	if err != nil {
		return nil, err
	}
	edit := len(add) > 0 || len(remove) > 0
	switch {
	case max != nil && edit:
		return nil, errf(codeInvalidCombination, "The entries of a prefix list and its size (MaxEntries) cannot be modified in the same request")
	case max == nil && !edit && !rename:
		return nil, errf(codeMissingParameter, "The request must contain AddEntry, RemoveEntry, PrefixListName or MaxEntries")
	}
	for _, a := range add {
		for _, r := range remove {
			if a.cidr() == r.cidr() {
				// AWS's own words for this refusal.
				return nil, errf(codeInvalidParameterValue, "Request cannot contain Cidr %s in both AddPrefixListEntries and RemovePrefixListEntries", a.cidr())
			}
		}
	}
	var out store.PrefixList
	err = c.change(func(s *store.Snapshot) error {
		pl, err := c.writablePrefixList(s, id)
		if err != nil {
			return err
		}
		// EC2's optimistic concurrency: a writer that read an older version is refused,
		// and reads the list again.
		if current != nil && *current != pl.Version {
			return errf(codePrefixListVersion, "The prefix list has the incorrect version number (%d; %s is at version %d)", *current, id, pl.Version)
		}
		if err := checkFamily(add, pl.AddressFamily); err != nil {
			return err
		}
		var gone []string
		for _, r := range remove {
			if pl.Entry(r.cidr()) == nil {
				return errf(codePrefixListModification, "The CIDR %s (%s) does not exist.", r.cidr(), r.param)
			}
			gone = append(gone, r.cidr())
		}
		for _, a := range add {
			if pl.Entry(a.cidr()) != nil {
				return errf(codePrefixListModification, "The CIDR %s (%s) already exists in prefix list %s; to change its description, remove it in one request and add it in the next", a.cidr(), a.param, id)
			}
		}
		if n := len(pl.Entries) - len(gone) + len(add); n > pl.MaxEntries {
			return errf(codePrefixListMaxEntries, "The prefix list would have %d entries, more than its maximum of %d (MaxEntries)", n, pl.MaxEntries)
		}
		if max != nil && *max < len(pl.Entries) {
			return errf(codeInvalidParameterValue, "MaxEntries %d is less than the %d entries prefix list %s has", *max, len(pl.Entries), id)
		}
		if edit {
			pl.Edit(storeEntries(add), gone)
		}
		if rename {
			pl.Name = name
		}
		if max != nil {
			pl.MaxEntries = *max
		}
		pl.State = stateModified
		out = *pl
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &prefixListResponse{XMLName: xml.Name{Local: "ModifyManagedPrefixListResponse"}, PrefixList: c.xmlPrefixList(out)}, nil
}

func deleteManagedPrefixList(c *call) (response, error) {
	id, err := c.prefixListID()
	if err != nil {
		return nil, err
	}
	var out store.PrefixList
	err = c.change(func(s *store.Snapshot) error {
		pl, err := c.writablePrefixList(s, id)
		if err != nil {
			return err
		}
		if err := c.prefixListInUse(s, id); err != nil {
			return err
		}
		out = *pl
		s.RemovePrefixList(id)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out.State = stateDeleted
	return &prefixListResponse{XMLName: xml.Name{Local: "DeleteManagedPrefixListResponse"}, PrefixList: c.xmlPrefixList(out)}, nil
}

// prefixListInUse refuses to delete a list a rule refers to (EC2: DependencyViolation): a
// rule of the API's groups as s holds them, or of any other source's groups in force.
func (c *call) prefixListInUse(s *store.Snapshot, id string) error {
	refused := func(rule, group string) error {
		return errf(codeDependencyViolation, "resource %s has a dependent object (rule %s of group %s refers to it); revoke the rule first", id, rule, group)
	}
	for _, g := range s.Groups {
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			if r.PrefixListID == id {
				return refused(r.ID, g.ID)
			}
		}
	}
	for _, g := range c.model.Groups {
		if s.Group(g.ID) != nil {
			continue // the API's: as s has it, above
		}
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			if r.Peer.Kind == rules.PeerPrefixList && r.Peer.ID == id {
				return refused(r.ID, g.ID)
			}
		}
	}
	return nil
}

func getManagedPrefixListEntries(c *call) (response, error) {
	id, err := c.prefixListID()
	if err != nil {
		return nil, err
	}
	target, err := c.q.long("TargetVersion")
	if err != nil {
		return nil, err
	}
	max, token, err := c.q.paging()
	if err != nil {
		return nil, err
	}
	if err := c.read(); err != nil {
		return nil, err
	}
	l, err := c.shownList(id)
	if err != nil {
		return nil, err
	}
	es := l.Entries
	if target != nil {
		var kept bool
		if es, kept = l.EntriesAt(*target); !kept {
			return nil, errf(codeInvalidParameterValue, "Version %d of prefix list %s does not exist (it is at version %d; sgd keeps its last %d versions)",
				*target, id, l.Version, store.MaxPrefixListVersions)
		}
	}
	cidrs := make([]string, 0, len(es))
	for _, e := range es {
		cidrs = append(cidrs, e.Cidr)
	}
	from, to, next, err := page(cidrs, prefixListBounds, max, token)
	if err != nil {
		return nil, err
	}
	resp := &entriesResponse{NextToken: next}
	for _, e := range es[from:to] {
		resp.Entries.Items = append(resp.Entries.Items, xmlPrefixEntry{e.Cidr, e.Description})
	}
	return resp, nil
}

// The XML shapes (service model: ManagedPrefixList, PrefixListEntry).

type xmlManagedPrefixList struct {
	PrefixListID  string       `xml:"prefixListId"`
	AddressFamily string       `xml:"addressFamily"`
	State         string       `xml:"state"`
	Arn           string       `xml:"prefixListArn"`
	Name          string       `xml:"prefixListName,omitempty"`
	MaxEntries    int          `xml:"maxEntries"`
	Version       int64        `xml:"version"`
	Tags          list[xmlTag] `xml:"tagSet"`
	OwnerID       string       `xml:"ownerId"`
}

type xmlPrefixEntry struct {
	Cidr        string `xml:"cidr"`
	Description string `xml:"description,omitempty"`
}

func (c *call) xmlPrefixList(pl store.PrefixList) xmlManagedPrefixList {
	return xmlManagedPrefixList{PrefixListID: pl.ID, AddressFamily: pl.AddressFamily, State: pl.State,
		Arn: "arn:aws:ec2:sgd:" + c.h.opt.OwnerID + ":prefix-list/" + pl.ID, Name: pl.Name, MaxEntries: pl.MaxEntries,
		Version: pl.Version, Tags: tagList(pl.Tags), OwnerID: c.h.opt.OwnerID}
}

// prefixListResponse is Create's, Modify's and Delete's: the list as it now is.
type prefixListResponse struct {
	XMLName xml.Name
	base
	PrefixList xmlManagedPrefixList `xml:"prefixList"`
}

type describePrefixListsResponse struct {
	XMLName xml.Name `xml:"DescribeManagedPrefixListsResponse"`
	base
	PrefixLists list[xmlManagedPrefixList] `xml:"prefixListSet"`
	NextToken   string                     `xml:"nextToken,omitempty"`
}

type entriesResponse struct {
	XMLName xml.Name `xml:"GetManagedPrefixListEntriesResponse"`
	base
	Entries   list[xmlPrefixEntry] `xml:"entrySet"`
	NextToken string               `xml:"nextToken,omitempty"`
}
