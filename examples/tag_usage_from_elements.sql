-- The same question as tag_usage.sql for public top-level tags, asked of the element rows
-- themselves: reads every element row, so it takes minutes on a large archive. Useful to
-- check the summary, or to add conditions the summary does not keep (e.g. on length).
-- The element_details view gives each row its tag as (gggg,eeee), keyword and file;
-- flags 1 (file meta) and 2 (sequence item) mark rows that are not data elements.
SELECT tag,
       keyword,
       COUNT(DISTINCT file_id) AS instances,
       COUNT(*) AS occurrences
FROM element_details
WHERE depth = 0
  AND (flags & 3) = 0
  AND substr(tag, 5, 1) IN ('0', '2', '4', '6', '8', 'A', 'C', 'E')
GROUP BY tag, keyword
ORDER BY tag;
