package ec2api

import (
	"slices"
	"strings"

	"github.com/sgd-firewall/sgd/internal/store"
)

// maxTags is EC2's quota of tags per resource.
const maxTags = 50

// tagging is CreateTags (set) or DeleteTags: on the API's groups (sg-), rules (sgr-) and
// prefix lists (pl-).
func tagging(set bool) func(*call) (response, error) {
	return func(c *call) (response, error) {
		ids, err := c.q.strs("ResourceId")
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, errf(codeMissingParameter, "The request must contain the parameter ResourceId")
		}
		// DeleteTags: a tag given without a value goes whatever its value; with a value
		// (the empty one too), only when it has that value; no tags at all: every tag.
		ms, err := c.q.members("Tag")
		if err != nil {
			return nil, err
		}
		var ts []tag
		anyValue := map[string]bool{}
		for _, m := range ms {
			k, err := m.required("Key")
			if err != nil {
				return nil, err
			}
			anyValue[k] = !m.has("Value")
			ts = append(ts, tag{Key: k, Value: m.str("Value")})
		}
		if set && len(ts) == 0 {
			return nil, errf(codeMissingParameter, "The request must contain the parameter Tag")
		}
		for _, t := range ts {
			if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
				return nil, errf(codeInvalidParameterValue, "Tag keys starting with 'aws:' are reserved for internal use")
			}
			if len(t.Key) > 128 || len(t.Value) > 256 {
				return nil, errf(codeInvalidParameterValue, "Tag keys are at most 128 characters and values at most 256")
			}
		}
		err = c.change(func(s *store.Snapshot) error {
			for _, id := range ids {
				tags, err := c.taggable(s, id)
				if err != nil {
					return err
				}
				if set {
					for _, t := range ts {
						if i := slices.IndexFunc(*tags, func(o tag) bool { return o.Key == t.Key }); i >= 0 {
							(*tags)[i].Value = t.Value
						} else {
							*tags = append(*tags, t)
						}
					}
					if len(*tags) > maxTags {
						return errf(codeTagLimitExceeded, "The maximum number of tags (%d) on resource %s would be exceeded", maxTags, id)
					}
					continue
				}
				*tags = slices.DeleteFunc(*tags, func(o tag) bool {
					return len(ts) == 0 || slices.ContainsFunc(ts, func(t tag) bool {
						return t.Key == o.Key && (anyValue[t.Key] || t.Value == o.Value)
					})
				})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if set {
			return ok("CreateTags"), nil
		}
		return ok("DeleteTags"), nil
	}
}

// taggable returns the tags of the API object id in s.
func (c *call) taggable(s *store.Snapshot, id string) (*[]tag, error) {
	switch {
	case strings.HasPrefix(id, "sgr-"):
		if r, _, _ := s.Rule(id); r != nil {
			return &r.Tags, nil
		}
		if c.modelRule(id) != nil {
			return nil, errf(codeReadOnly, "The security group rule '%s' is defined in sgd's config file and is read-only through the API", id)
		}
		return nil, errf(codeRuleIDNotFound, "The security group rule ID '%s' does not exist", id)
	case strings.HasPrefix(id, "sg-"):
		g, err := c.writable(s, id)
		if err != nil {
			return nil, err
		}
		return &g.Tags, nil
	case strings.HasPrefix(id, "pl-"):
		pl, err := c.writablePrefixList(s, id)
		if err != nil {
			return nil, err
		}
		return &pl.Tags, nil
	}
	return nil, errf(codeInvalidID, "The ID '%s' is not valid: sgd tags security groups (sg-), their rules (sgr-) and prefix lists (pl-)", id)
}

// modifySecurityGroupRules replaces rules of one group, by id: the id stays (EC2's
// ModifySecurityGroupRules).
func modifySecurityGroupRules(c *call) (response, error) {
	id, err := c.q.required("GroupId")
	if err != nil {
		return nil, err
	}
	if err := checkGroupID(id); err != nil {
		return nil, err
	}
	ms, err := c.q.members("SecurityGroupRule")
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, errf(codeMissingParameter, "The request must contain the parameter SecurityGroupRule")
	}
	type edit struct {
		id string
		r  store.Rule
	}
	var edits []edit
	for _, m := range ms {
		rid, err := m.required("SecurityGroupRuleId")
		if err != nil {
			return nil, err
		}
		sr := m.member("SecurityGroupRule")
		r := store.Rule{ID: rid, Protocol: sr.str("IpProtocol"), CidrIPv4: sr.str("CidrIpv4"), CidrIPv6: sr.str("CidrIpv6"),
			PrefixListID: sr.str("PrefixListId"), ReferencedGroupID: sr.str("ReferencedGroupId"), Description: sr.str("Description")}
		if r.Protocol == "" {
			return nil, errf(codeMissingParameter, "The request must contain the parameter %sIpProtocol", sr.prefix)
		}
		if r.FromPort, err = sr.integer("FromPort"); err != nil {
			return nil, err
		}
		if r.ToPort, err = sr.integer("ToPort"); err != nil {
			return nil, err
		}
		edits = append(edits, edit{rid, r})
	}
	err = c.change(func(s *store.Snapshot) error {
		g, err := c.writable(s, id)
		if err != nil {
			return err
		}
		for _, e := range edits {
			r, in, _ := s.Rule(e.id)
			if r == nil || in.ID != g.ID {
				return errf(codeRuleIDNotFound, "The security group rule ID '%s' does not exist in %s", e.id, id)
			}
			e.r.Tags = r.Tags
			*r = e.r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ok("ModifySecurityGroupRules"), nil
}

// updateDescriptions sets rule descriptions, by permission (each range's Description) or
// by SecurityGroupRuleDescription.N (id and description).
func updateDescriptions(egress bool) func(*call) (response, error) {
	return func(c *call) (response, error) {
		id, err := c.groupID()
		if err != nil {
			return nil, err
		}
		byID := map[string]string{}
		ms, err := c.q.members("SecurityGroupRuleDescription")
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			rid, err := m.required("SecurityGroupRuleId")
			if err != nil {
				return nil, err
			}
			byID[rid] = m.str("Description")
		}
		var perms []store.Rule
		if len(ms) == 0 {
			if perms, err = c.permissions(); err != nil {
				return nil, err
			}
		}
		err = c.change(func(s *store.Snapshot) error {
			g, err := c.writable(s, id)
			if err != nil {
				return err
			}
			list := *rulesOf(g, egress)
			for rid, d := range byID {
				i := slices.IndexFunc(list, func(r store.Rule) bool { return r.ID == rid })
				if i < 0 {
					return errf(codeRuleIDNotFound, "The security group rule ID '%s' does not exist in the %s rules of %s", rid, strings.ToLower(direction(egress)), id)
				}
				list[i].Description = d
			}
			for i := range perms {
				k := ruleKey(&perms[i])
				j := slices.IndexFunc(list, func(r store.Rule) bool { return ruleKey(&r) == k })
				if j < 0 {
					return errf(codePermissionNotFound, "The specified rule does not exist in this security group (peer: %s, %s)", peerText(&perms[i]), portText(&perms[i]))
				}
				list[j].Description = perms[i].Description
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return ok("UpdateSecurityGroupRuleDescriptions" + direction(egress)), nil
	}
}
