package ec2api

import (
	"strconv"
	"strings"
	"testing"
)

// The prefix-list calls with the real AWS CLI v2: what it prints, and the AWS codes of
// what is refused.
func TestAWSCLIPrefixLists(t *testing.T) {
	r := newRig(t)
	withFileList(t, r)
	c := newCLI(t, r)

	type prefixList struct {
		PrefixListId, PrefixListName, AddressFamily, State, PrefixListArn, OwnerId string
		MaxEntries                                                                 int
		Version                                                                    int64
		Tags                                                                       []struct{ Key, Value string }
	}
	var cr struct{ PrefixList prefixList }
	c.ok(&cr, "create-managed-prefix-list", "--prefix-list-name", "admins", "--max-entries", "4", "--address-family", "IPv4",
		"--entries", "Cidr=203.0.113.0/28,Description=admin desks", "Cidr=198.51.100.7/32",
		"--tag-specifications", "ResourceType=prefix-list,Tags=[{Key=team,Value=ops}]")
	pl := cr.PrefixList
	if !strings.HasPrefix(pl.PrefixListId, "pl-") || len(pl.PrefixListId) != 20 || pl.State != "create-complete" || pl.Version != 1 ||
		pl.MaxEntries != 4 || pl.AddressFamily != "IPv4" || pl.PrefixListName != "admins" || len(pl.Tags) != 1 || pl.OwnerId == "" || pl.PrefixListArn == "" {
		t.Fatalf("create-managed-prefix-list printed %+v", pl)
	}
	id := pl.PrefixListId
	c.fails("InvalidParameterValue", "create-managed-prefix-list", "--prefix-list-name", "v6", "--max-entries", "2", "--address-family", "IPv6", "--entries", "Cidr=10.0.0.0/8")
	c.fails("PrefixListMaxEntriesExceeded", "create-managed-prefix-list", "--prefix-list-name", "small", "--max-entries", "1", "--address-family", "IPv4",
		"--entries", "Cidr=10.0.0.0/8", "Cidr=172.16.0.0/12")
	c.fails("DryRunOperation", "create-managed-prefix-list", "--dry-run", "--prefix-list-name", "dry", "--max-entries", "1", "--address-family", "IPv4")

	var dl struct{ PrefixLists []prefixList }
	c.ok(&dl, "describe-managed-prefix-lists")
	if len(dl.PrefixLists) != 2 || dl.PrefixLists[0].PrefixListId != "pl-file" || dl.PrefixLists[1].PrefixListId != id {
		t.Errorf("describe-managed-prefix-lists printed %+v; want pl-file and %s", dl, id)
	}
	c.ok(&dl, "describe-managed-prefix-lists", "--filters", "Name=prefix-list-name,Values=admins")
	if len(dl.PrefixLists) != 1 || dl.PrefixLists[0].PrefixListId != id {
		t.Errorf("describe-managed-prefix-lists --filters prefix-list-name=admins printed %+v", dl)
	}
	c.ok(&dl, "describe-managed-prefix-lists", "--prefix-list-ids", id)
	if len(dl.PrefixLists) != 1 || len(dl.PrefixLists[0].Tags) != 1 {
		t.Errorf("describe-managed-prefix-lists --prefix-list-ids printed %+v", dl)
	}
	c.fails("InvalidPrefixListID.NotFound", "describe-managed-prefix-lists", "--prefix-list-ids", "pl-0123456789abcdef0")
	c.fails("InvalidPrefixListId.Malformed", "describe-managed-prefix-lists", "--prefix-list-ids", "admins")

	// A rule from the list, in the CLI's shorthand.
	var cg struct{ GroupId string }
	c.ok(&cg, "create-security-group", "--group-name", "cli-pl", "--description", "rules from a prefix list")
	c.ok(nil, "authorize-security-group-ingress", "--group-id", cg.GroupId, "--ip-permissions",
		"IpProtocol=tcp,FromPort=22,ToPort=22,PrefixListIds=[{PrefixListId="+id+",Description=admins}]")
	var dg struct {
		SecurityGroups []struct {
			IpPermissions []struct {
				PrefixListIds []struct{ PrefixListId, Description string }
			}
		}
	}
	c.ok(&dg, "describe-security-groups", "--group-ids", cg.GroupId)
	if p := dg.SecurityGroups[0].IpPermissions; len(p) != 1 || len(p[0].PrefixListIds) != 1 || p[0].PrefixListIds[0].PrefixListId != id || p[0].PrefixListIds[0].Description != "admins" {
		t.Errorf("describe-security-groups printed %+v; want the rule from %s", dg, id)
	}

	type entries struct {
		Entries   []struct{ Cidr, Description string }
		NextToken string
	}
	var en entries
	c.ok(&en, "get-managed-prefix-list-entries", "--prefix-list-id", id)
	if len(en.Entries) != 2 || en.Entries[0].Cidr != "198.51.100.7/32" || en.Entries[1].Description != "admin desks" {
		t.Errorf("get-managed-prefix-list-entries printed %+v", en)
	}
	c.ok(&en, "get-managed-prefix-list-entries", "--prefix-list-id", id, "--max-items", "1")
	if len(en.Entries) != 1 || en.NextToken == "" {
		t.Errorf("get-managed-prefix-list-entries --max-items 1 printed %+v; want one entry and a NextToken", en)
	}
	c.fails("InvalidPrefixListID.NotFound", "get-managed-prefix-list-entries", "--prefix-list-id", "pl-0123456789abcdef0")

	var mo struct{ PrefixList prefixList }
	c.ok(&mo, "modify-managed-prefix-list", "--prefix-list-id", id, "--current-version", "1", "--add-entries", "Cidr=192.0.2.0/24,Description=lab",
		"--remove-entries", "Cidr=198.51.100.7/32")
	if mo.PrefixList.Version != 2 || mo.PrefixList.State != "modify-complete" {
		t.Errorf("modify-managed-prefix-list printed %+v; want version 2, modify-complete", mo)
	}
	en = entries{}
	c.ok(&en, "get-managed-prefix-list-entries", "--prefix-list-id", id, "--target-version", "1")
	if len(en.Entries) != 2 || en.Entries[0].Cidr != "198.51.100.7/32" {
		t.Errorf("get-managed-prefix-list-entries --target-version 1 printed %+v; want version 1's entries", en)
	}
	c.fails("PrefixListVersionMismatch", "modify-managed-prefix-list", "--prefix-list-id", id, "--current-version", "1", "--add-entries", "Cidr=10.0.0.0/8")
	c.fails("PrefixListMaxEntriesExceeded", "modify-managed-prefix-list", "--prefix-list-id", id, "--add-entries", "Cidr=10.0.0.0/8", "Cidr=172.16.0.0/12", "Cidr=100.64.0.0/10")
	c.fails("InvalidPrefixListModification", "modify-managed-prefix-list", "--prefix-list-id", id, "--remove-entries", "Cidr=10.0.0.0/8")
	c.fails("InvalidParameterValue", "modify-managed-prefix-list", "--prefix-list-id", id, "--add-entries", "Cidr=2001:db8::/32")
	c.fails("OperationNotPermitted", "modify-managed-prefix-list", "--prefix-list-id", "pl-file", "--prefix-list-name", "mine")
	c.fails("DryRunOperation", "modify-managed-prefix-list", "--dry-run", "--prefix-list-id", id, "--add-entries", "Cidr=10.0.0.0/8")
	c.ok(&mo, "modify-managed-prefix-list", "--prefix-list-id", id, "--max-entries", "10")
	if mo.PrefixList.MaxEntries != 10 || mo.PrefixList.Version != 2 {
		t.Errorf("modify-managed-prefix-list --max-entries 10 printed %+v; want 10 at version 2", mo)
	}

	c.fails("DependencyViolation", "delete-managed-prefix-list", "--prefix-list-id", id)
	c.fails("OperationNotPermitted", "delete-managed-prefix-list", "--prefix-list-id", "pl-file")
	c.ok(nil, "revoke-security-group-ingress", "--group-id", cg.GroupId, "--ip-permissions",
		"IpProtocol=tcp,FromPort=22,ToPort=22,PrefixListIds=[{PrefixListId="+id+"}]")
	var del struct{ PrefixList prefixList }
	c.ok(&del, "delete-managed-prefix-list", "--prefix-list-id", id)
	if del.PrefixList.PrefixListId != id || del.PrefixList.State != "delete-complete" || del.PrefixList.Version != 2 {
		t.Errorf("delete-managed-prefix-list printed %+v", del)
	}
	c.fails("InvalidPrefixListID.NotFound", "delete-managed-prefix-list", "--prefix-list-id", id)
	c.ok(&dl, "describe-managed-prefix-lists")
	if len(dl.PrefixLists) != 1 {
		t.Errorf("describe-managed-prefix-lists after the delete printed %d lists; want the file's: %+v", len(dl.PrefixLists), dl)
	}

	// Paging through the CLI's own paginator: every entry once.
	var big struct{ PrefixList prefixList }
	args := []string{"create-managed-prefix-list", "--prefix-list-name", "big", "--max-entries", "30", "--address-family", "IPv4", "--entries"}
	for i := range 25 {
		args = append(args, "Cidr=10.1."+strconv.Itoa(i)+".0/24")
	}
	c.ok(&big, args...)
	en = entries{}
	c.ok(&en, "get-managed-prefix-list-entries", "--prefix-list-id", big.PrefixList.PrefixListId, "--page-size", "10")
	if len(en.Entries) != 25 || en.NextToken != "" {
		t.Errorf("get-managed-prefix-list-entries --page-size 10 printed %d entries (NextToken %q); want all 25", len(en.Entries), en.NextToken)
	}
}
