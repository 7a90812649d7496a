-- Customers without orders count 0.
SELECT c.customer_id,
       c.full_name,
       c.country,
       count(l.order_id) AS orders,
       coalesce(sum(l.amount), 0) AS revenue
FROM stg_customers c
LEFT JOIN order_lines l ON l.customer_id = c.customer_id
GROUP BY c.customer_id, c.full_name, c.country
