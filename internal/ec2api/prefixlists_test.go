package ec2api

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// fileWithList is the rig's config file plus a prefix list of the file's own.
const fileWithList = fileConfig + `prefix_lists:
  - prefix_list_id: pl-file
    prefix_list_name: office
    entries: [192.0.2.128/25]
`

// withFileList gives the rig's config file a prefix list of its own (read-only through
// the API) and reloads.
func withFileList(t *testing.T, r *rig) {
	t.Helper()
	if err := os.WriteFile(r.file, []byte(fileWithList), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.ctl.Reload(r.ctx(), "test: the file's prefix list"); err != nil {
		t.Fatal(err)
	}
}

// sshGroup makes a group, attaches it to eth0 and returns its id.
func sshGroup(t *testing.T, r *rig) string {
	t.Helper()
	ctx, c := r.ctx(), r.client
	cg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("pl-users"), Description: aws.String("uses prefix lists")})
	if err != nil {
		t.Fatal(err)
	}
	enis, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{})
	if err != nil || len(enis.NetworkInterfaces) != 1 {
		t.Fatalf("DescribeNetworkInterfaces = %+v, %v", enis, err)
	}
	if _, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: enis.NetworkInterfaces[0].NetworkInterfaceId, Groups: []string{aws.ToString(cg.GroupId)}}); err != nil {
		t.Fatal(err)
	}
	return aws.ToString(cg.GroupId)
}

func plEntry(cidr, desc string) types.AddPrefixListEntry {
	e := types.AddPrefixListEntry{Cidr: aws.String(cidr)}
	if desc != "" {
		e.Description = aws.String(desc)
	}
	return e
}

func plPerm(port int32, pl string) types.IpPermission {
	return types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(port), ToPort: aws.Int32(port),
		PrefixListIds: []types.PrefixListId{{PrefixListId: aws.String(pl), Description: aws.String("from the list")}}}
}

// A prefix list made through the API, referenced by a rule: the packet path follows its
// entries as they change, EC2's version check refuses a stale writer, a list in use cannot
// be deleted, and everything survives a restart.
func TestSDKPrefixLists(t *testing.T) {
	r := newRig(t)
	withFileList(t, r)
	ctx, c := r.ctx(), r.client
	sg := sshGroup(t, r)

	cr, err := c.CreateManagedPrefixList(ctx, &ec2.CreateManagedPrefixListInput{PrefixListName: aws.String("admins"), AddressFamily: aws.String("IPv4"),
		MaxEntries: aws.Int32(3), Entries: []types.AddPrefixListEntry{plEntry("203.0.113.0/28", "admin desks")},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypePrefixList, Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("ops")}}}}})
	if err != nil {
		t.Fatalf("CreateManagedPrefixList = %v", err)
	}
	pl := cr.PrefixList
	id := aws.ToString(pl.PrefixListId)
	if len(id) != 20 || !strings.HasPrefix(id, "pl-") || aws.ToInt64(pl.Version) != 1 || pl.State != types.PrefixListStateCreateComplete ||
		aws.ToInt32(pl.MaxEntries) != 3 || aws.ToString(pl.AddressFamily) != "IPv4" || len(pl.Tags) != 1 || aws.ToString(pl.OwnerId) == "" ||
		!strings.HasSuffix(aws.ToString(pl.PrefixListArn), ":prefix-list/"+id) {
		t.Fatalf("CreateManagedPrefixList = %+v; want pl- and 17 hex digits, version 1, create-complete, the size, family and tag", pl)
	}

	// A rule referencing the list: an address in it is allowed, one outside is not.
	au, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &sg, IpPermissions: []types.IpPermission{plPerm(22, id)}})
	if err != nil || len(au.SecurityGroupRules) != 1 || aws.ToString(au.SecurityGroupRules[0].PrefixListId) != id {
		t.Fatalf("AuthorizeSecurityGroupIngress(PrefixListIds %s) = %+v, %v", id, au, err)
	}
	ruleID := aws.ToString(au.SecurityGroupRules[0].SecurityGroupRuleId)
	if !r.allows("203.0.113.5", 22) || r.allows("198.51.100.7", 22) {
		t.Fatal("with the list's rule: 203.0.113.5 not allowed, or 198.51.100.7 (not in the list) allowed")
	}
	d, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{sg}})
	if err != nil || len(d.SecurityGroups[0].IpPermissions) != 1 || len(d.SecurityGroups[0].IpPermissions[0].PrefixListIds) != 1 ||
		aws.ToString(d.SecurityGroups[0].IpPermissions[0].PrefixListIds[0].PrefixListId) != id {
		t.Errorf("DescribeSecurityGroups = %+v, %v; want the rule's PrefixListIds", d, err)
	}
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &sg,
		IpPermissions: []types.IpPermission{plPerm(23, "pl-0000000000000dead")}}); code(err) != "InvalidPrefixListID.NotFound" {
		t.Errorf("Authorize(an unknown list) = %v; want InvalidPrefixListID.NotFound", err)
	}

	// Modify: the new entry is allowed at once; the version goes up.
	mo, err := c.ModifyManagedPrefixList(ctx, &ec2.ModifyManagedPrefixListInput{PrefixListId: &id, CurrentVersion: aws.Int64(1),
		AddEntries: []types.AddPrefixListEntry{plEntry("198.51.100.7/32", "on call")}})
	if err != nil || aws.ToInt64(mo.PrefixList.Version) != 2 || mo.PrefixList.State != types.PrefixListStateModifyComplete {
		t.Fatalf("ModifyManagedPrefixList(add) = %+v, %v; want version 2, modify-complete", mo, err)
	}
	if !r.allows("198.51.100.7", 22) || !r.allows("203.0.113.5", 22) {
		t.Fatal("after adding 198.51.100.7/32 to the list, the packet path does not allow it (or lost the old entry)")
	}

	refused := []struct {
		name string
		in   ec2.ModifyManagedPrefixListInput
		code string
	}{
		{"a stale CurrentVersion", ec2.ModifyManagedPrefixListInput{CurrentVersion: aws.Int64(1), AddEntries: []types.AddPrefixListEntry{plEntry("198.51.100.8/32", "")}}, "PrefixListVersionMismatch"},
		{"more than MaxEntries", ec2.ModifyManagedPrefixListInput{AddEntries: []types.AddPrefixListEntry{plEntry("198.51.100.8/32", ""), plEntry("198.51.100.9/32", "")}}, "PrefixListMaxEntriesExceeded"},
		{"an IPv6 entry in an IPv4 list", ec2.ModifyManagedPrefixListInput{AddEntries: []types.AddPrefixListEntry{plEntry("2001:db8::/64", "")}}, "InvalidParameterValue"},
		{"an entry that is not there", ec2.ModifyManagedPrefixListInput{RemoveEntries: []types.RemovePrefixListEntry{{Cidr: aws.String("10.0.0.0/8")}}}, "InvalidPrefixListModification"},
		{"an entry that is already there", ec2.ModifyManagedPrefixListInput{AddEntries: []types.AddPrefixListEntry{plEntry("203.0.113.0/28", "")}}, "InvalidPrefixListModification"},
		{"entries and size together", ec2.ModifyManagedPrefixListInput{MaxEntries: aws.Int32(10), AddEntries: []types.AddPrefixListEntry{plEntry("198.51.100.8/32", "")}}, "InvalidParameterCombination"},
		{"a size below the entries", ec2.ModifyManagedPrefixListInput{MaxEntries: aws.Int32(1)}, "InvalidParameterValue"},
		{"a dry run", ec2.ModifyManagedPrefixListInput{DryRun: aws.Bool(true), AddEntries: []types.AddPrefixListEntry{plEntry("198.51.100.8/32", "")}}, "DryRunOperation"},
	}
	for _, tc := range refused {
		in := tc.in
		in.PrefixListId = &id
		if _, err := c.ModifyManagedPrefixList(ctx, &in); code(err) != tc.code {
			t.Errorf("ModifyManagedPrefixList(%s) = %v; want %s", tc.name, err, tc.code)
		}
	}
	if r.allows("198.51.100.8", 22) {
		t.Error("a refused or dry-run modify changed the packet path")
	}
	if _, err := c.ModifyManagedPrefixList(ctx, &ec2.ModifyManagedPrefixListInput{PrefixListId: aws.String("pl-file"), PrefixListName: aws.String("x")}); code(err) != "OperationNotPermitted" {
		t.Errorf("ModifyManagedPrefixList(the file's list) = %v; want OperationNotPermitted", err)
	}
	// A new name or size is no new version (AWS: only entries make versions).
	mo, err = c.ModifyManagedPrefixList(ctx, &ec2.ModifyManagedPrefixListInput{PrefixListId: &id, CurrentVersion: aws.Int64(2), PrefixListName: aws.String("admins-2")})
	if err != nil || aws.ToString(mo.PrefixList.PrefixListName) != "admins-2" || aws.ToInt64(mo.PrefixList.Version) != 2 {
		t.Errorf("ModifyManagedPrefixList(rename) = %+v, %v; want admins-2 at version 2", mo, err)
	}

	// Describe: the API's list and the file's, by id, by filter, page by page.
	dl, err := c.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{})
	if err != nil || len(dl.PrefixLists) != 2 || aws.ToString(dl.PrefixLists[0].PrefixListId) != "pl-file" || aws.ToString(dl.PrefixLists[1].PrefixListId) != id {
		t.Fatalf("DescribeManagedPrefixLists = %+v, %v; want pl-file and %s", dl, err, id)
	}
	if f := dl.PrefixLists[0]; aws.ToString(f.AddressFamily) != "IPv4" || aws.ToInt32(f.MaxEntries) != 1 || aws.ToInt64(f.Version) != 1 {
		t.Errorf("the file's list = %+v; want IPv4, 1 entry, version 1", f)
	}
	byName, err := c.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{Filters: []types.Filter{{Name: aws.String("prefix-list-name"), Values: []string{"admins-*"}}}})
	if err != nil || len(byName.PrefixLists) != 1 || aws.ToString(byName.PrefixLists[0].PrefixListId) != id {
		t.Errorf("DescribeManagedPrefixLists(prefix-list-name admins-*) = %+v, %v", byName, err)
	}
	byTag, err := c.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{Filters: []types.Filter{{Name: aws.String("tag:team"), Values: []string{"ops"}}}})
	if err != nil || len(byTag.PrefixLists) != 1 {
		t.Errorf("DescribeManagedPrefixLists(tag:team=ops) = %+v, %v", byTag, err)
	}
	var seen []string
	lists := ec2.NewDescribeManagedPrefixListsPaginator(c, &ec2.DescribeManagedPrefixListsInput{MaxResults: aws.Int32(1)})
	for lists.HasMorePages() && len(seen) < 5 {
		p, err := lists.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range p.PrefixLists {
			seen = append(seen, aws.ToString(l.PrefixListId))
		}
	}
	if len(seen) != 2 {
		t.Errorf("DescribeManagedPrefixLists one at a time saw %v; want both lists", seen)
	}
	for _, tc := range []struct{ id, code string }{{"pl-0000000000000dead", "InvalidPrefixListID.NotFound"}, {"admins", "InvalidPrefixListId.Malformed"}} {
		if _, err := c.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{PrefixListIds: []string{tc.id}}); code(err) != tc.code {
			t.Errorf("DescribeManagedPrefixLists(%s) = %v; want %s", tc.id, err, tc.code)
		}
	}

	// Entries now and at version 1.
	en, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: &id})
	if err != nil || len(en.Entries) != 2 || aws.ToString(en.Entries[0].Cidr) != "198.51.100.7/32" || aws.ToString(en.Entries[1].Description) != "admin desks" {
		t.Errorf("GetManagedPrefixListEntries = %+v, %v; want both entries, in address order", en, err)
	}
	v1, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: &id, TargetVersion: aws.Int64(1)})
	if err != nil || len(v1.Entries) != 1 || aws.ToString(v1.Entries[0].Cidr) != "203.0.113.0/28" {
		t.Errorf("GetManagedPrefixListEntries(TargetVersion 1) = %+v, %v; want the first entry only", v1, err)
	}
	if _, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: &id, TargetVersion: aws.Int64(3)}); code(err) != "InvalidParameterValue" {
		t.Errorf("GetManagedPrefixListEntries(TargetVersion 3) = %v; want InvalidParameterValue", err)
	}
	fe, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: aws.String("pl-file")})
	if err != nil || len(fe.Entries) != 1 || aws.ToString(fe.Entries[0].Cidr) != "192.0.2.128/25" {
		t.Errorf("GetManagedPrefixListEntries(pl-file) = %+v, %v", fe, err)
	}

	// The same create retried with its ClientToken is the same list; another with that
	// token is refused.
	again := &ec2.CreateManagedPrefixListInput{PrefixListName: aws.String("retried"), AddressFamily: aws.String("IPv6"), MaxEntries: aws.Int32(5), ClientToken: aws.String("token-1")}
	first, err := c.CreateManagedPrefixList(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.CreateManagedPrefixList(ctx, again)
	if err != nil || aws.ToString(second.PrefixList.PrefixListId) != aws.ToString(first.PrefixList.PrefixListId) {
		t.Errorf("CreateManagedPrefixList(the same ClientToken) = %+v, %v; want %s again", second, err, aws.ToString(first.PrefixList.PrefixListId))
	}
	again.MaxEntries = aws.Int32(6)
	if _, err := c.CreateManagedPrefixList(ctx, again); code(err) != "IdempotentParameterMismatch" {
		t.Errorf("CreateManagedPrefixList(the token, other parameters) = %v; want IdempotentParameterMismatch", err)
	}
	for _, in := range []*ec2.CreateManagedPrefixListInput{
		{PrefixListName: aws.String("x"), AddressFamily: aws.String("IPv5"), MaxEntries: aws.Int32(1)},
		{PrefixListName: aws.String("com.amazonaws.mine"), AddressFamily: aws.String("IPv4"), MaxEntries: aws.Int32(1)},
		{PrefixListName: aws.String("x"), AddressFamily: aws.String("IPv4"), MaxEntries: aws.Int32(1001)},
		{PrefixListName: aws.String("x"), AddressFamily: aws.String("IPv4"), MaxEntries: aws.Int32(1), Entries: []types.AddPrefixListEntry{plEntry("10.0.0.0/8", ""), plEntry("10.0.0.0/8", "")}},
		{PrefixListName: aws.String("x"), AddressFamily: aws.String("IPv6"), MaxEntries: aws.Int32(1), Entries: []types.AddPrefixListEntry{plEntry("::ffff:10.0.0.0/104", "")}},
	} {
		if _, err := c.CreateManagedPrefixList(ctx, in); code(err) != "InvalidParameterValue" {
			t.Errorf("CreateManagedPrefixList(%s, %s, %d, %d entries) = %v; want InvalidParameterValue", aws.ToString(in.PrefixListName), aws.ToString(in.AddressFamily), aws.ToInt32(in.MaxEntries), len(in.Entries), err)
		}
	}

	// Persistence: after a restart the list, its version history and the rule's effect are there.
	r.restart()
	ctx, c = r.ctx(), r.client
	dl, err = c.DescribeManagedPrefixLists(ctx, &ec2.DescribeManagedPrefixListsInput{PrefixListIds: []string{id}})
	if err != nil || len(dl.PrefixLists) != 1 || aws.ToInt64(dl.PrefixLists[0].Version) != 2 || aws.ToString(dl.PrefixLists[0].PrefixListName) != "admins-2" || len(dl.PrefixLists[0].Tags) != 1 {
		t.Fatalf("after a restart DescribeManagedPrefixLists(%s) = %+v, %v; want admins-2 at version 2, tagged", id, dl, err)
	}
	if v1, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: &id, TargetVersion: aws.Int64(1)}); err != nil || len(v1.Entries) != 1 {
		t.Errorf("after a restart GetManagedPrefixListEntries(TargetVersion 1) = %+v, %v", v1, err)
	}
	if !r.allows("198.51.100.7", 22) || r.allows("198.51.100.8", 22) {
		t.Error("after a restart the packet path does not follow the list")
	}

	// Delete: refused while the rule refers to it; done once the rule is revoked.
	if _, err := c.DeleteManagedPrefixList(ctx, &ec2.DeleteManagedPrefixListInput{PrefixListId: &id}); code(err) != "DependencyViolation" || !strings.Contains(err.Error(), ruleID) {
		t.Errorf("DeleteManagedPrefixList(referenced) = %v; want DependencyViolation naming %s", err, ruleID)
	}
	if _, err := c.DeleteManagedPrefixList(ctx, &ec2.DeleteManagedPrefixListInput{PrefixListId: aws.String("pl-file")}); code(err) != "OperationNotPermitted" {
		t.Errorf("DeleteManagedPrefixList(pl-file) = %v; want OperationNotPermitted", err)
	}
	if _, err := c.DeleteManagedPrefixList(ctx, &ec2.DeleteManagedPrefixListInput{PrefixListId: &id, DryRun: aws.Bool(true)}); code(err) != "DependencyViolation" {
		t.Errorf("DeleteManagedPrefixList(referenced, DryRun) = %v; want DependencyViolation", err)
	}
	if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &sg, SecurityGroupRuleIds: []string{ruleID}}); err != nil {
		t.Fatal(err)
	}
	if r.allows("198.51.100.7", 22) {
		t.Error("the packet path allows the list's address after the rule is revoked")
	}
	del, err := c.DeleteManagedPrefixList(ctx, &ec2.DeleteManagedPrefixListInput{PrefixListId: &id})
	if err != nil || del.PrefixList.State != types.PrefixListStateDeleteComplete || aws.ToString(del.PrefixList.PrefixListId) != id {
		t.Fatalf("DeleteManagedPrefixList(after revoking) = %+v, %v; want %s delete-complete", del, err, id)
	}
	if _, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: &id}); code(err) != "InvalidPrefixListID.NotFound" {
		t.Errorf("GetManagedPrefixListEntries(deleted) = %v; want InvalidPrefixListID.NotFound", err)
	}
	if _, err := c.DeleteManagedPrefixList(ctx, &ec2.DeleteManagedPrefixListInput{PrefixListId: &id}); code(err) != "InvalidPrefixListID.NotFound" {
		t.Errorf("DeleteManagedPrefixList(again) = %v; want InvalidPrefixListID.NotFound", err)
	}
}

// GetManagedPrefixListEntries pages: MaxResults at a time, in address order, with every
// entry once; bounds as the service model has them (1 to 100).
func TestSDKPrefixListEntriesPaging(t *testing.T) {
	r := newRig(t)
	ctx, c := r.ctx(), r.client
	var es []types.AddPrefixListEntry
	for i := range 12 {
		es = append(es, plEntry(fmt.Sprintf("10.0.%d.0/24", 11-i), ""))
	}
	cr, err := c.CreateManagedPrefixList(ctx, &ec2.CreateManagedPrefixListInput{PrefixListName: aws.String("many"), AddressFamily: aws.String("IPv4"), MaxEntries: aws.Int32(20), Entries: es})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.PrefixList.PrefixListId
	var got []string
	pages := 0
	p := ec2.NewGetManagedPrefixListEntriesPaginator(c, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: id, MaxResults: aws.Int32(5)})
	for p.HasMorePages() && pages < 10 {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Entries) > 5 {
			t.Errorf("page %d has %d entries; want at most 5", pages, len(out.Entries))
		}
		for _, e := range out.Entries {
			got = append(got, aws.ToString(e.Cidr))
		}
		pages++
	}
	if pages != 3 || len(got) != 12 || got[0] != "10.0.0.0/24" || got[11] != "10.0.11.0/24" {
		t.Errorf("paged entries = %v in %d pages; want 10.0.0.0/24 … 10.0.11.0/24 in 3", got, pages)
	}
	for _, max := range []int32{0, 101} {
		if _, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: id, MaxResults: aws.Int32(max)}); code(err) != "InvalidParameterValue" {
			t.Errorf("GetManagedPrefixListEntries(MaxResults %d) = %v; want InvalidParameterValue", max, err)
		}
	}
	if _, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: id, NextToken: aws.String("nonsense")}); code(err) != "InvalidNextToken" {
		t.Errorf("GetManagedPrefixListEntries(a bad NextToken) = %v; want InvalidNextToken", err)
	}
}

// EC2's optimistic concurrency: writers that all read version 1 race; exactly one wins,
// every other is told PrefixListVersionMismatch, and the list has the winner's entry only.
func TestSDKPrefixListVersionRace(t *testing.T) {
	r := newRig(t)
	ctx, c := r.ctx(), r.client
	cr, err := c.CreateManagedPrefixList(ctx, &ec2.CreateManagedPrefixListInput{PrefixListName: aws.String("raced"), AddressFamily: aws.String("IPv4"), MaxEntries: aws.Int32(10)})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.PrefixList.PrefixListId
	const writers = 8
	codes := make(chan string, writers)
	for i := range writers {
		go func() {
			_, err := c.ModifyManagedPrefixList(ctx, &ec2.ModifyManagedPrefixListInput{PrefixListId: id, CurrentVersion: aws.Int64(1),
				AddEntries: []types.AddPrefixListEntry{plEntry(fmt.Sprintf("10.0.%d.0/24", i), "")}})
			codes <- code(err)
		}()
	}
	won := 0
	for range writers {
		switch got := <-codes; got {
		case "":
			won++
		case "PrefixListVersionMismatch":
		default:
			t.Errorf("a racing ModifyManagedPrefixList = %s; want success or PrefixListVersionMismatch", got)
		}
	}
	en, err := c.GetManagedPrefixListEntries(ctx, &ec2.GetManagedPrefixListEntriesInput{PrefixListId: id})
	if won != 1 || err != nil || len(en.Entries) != 1 {
		t.Errorf("%d writers won, the list has %+v (%v); want 1 and its one entry", won, en, err)
	}
}
