-- How many instances of each modality hold each top-level tag, and what share that is.
SELECT g.modality,
       k.key AS tag,
       k.keywords AS keyword,
       SUM(u.instances) AS instances,
       ROUND(100.0 * SUM(u.instances) / MAX(m.total), 1) AS percent
FROM tag_usage u
JOIN tag_keys k ON k.id = u.key_id
JOIN usage_groups g ON g.id = u.group_id
JOIN (SELECT COALESCE(modality, '') AS modality, COUNT(*) AS total
      FROM instances GROUP BY COALESCE(modality, '')) m ON m.modality = g.modality
WHERE k.depth = 0
GROUP BY g.modality, k.key, k.keywords
ORDER BY g.modality, k.key;
