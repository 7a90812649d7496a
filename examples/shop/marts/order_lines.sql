SELECT o.order_id,
       o.order_date,
       o.customer_id,
       c.country,
       p.category,
       o.quantity,
       p.unit_price,
       o.quantity * p.unit_price AS amount
FROM stg_orders o
JOIN stg_customers c ON c.customer_id = o.customer_id
JOIN stg_products p ON p.product_id = o.product_id
WHERE o.status IN ('completed', 'shipped')
